-- Which instance's writer wrote an attempt, and in which of its groups: a count leaves out the
-- groups that instance still counts from memory, so the two add up without a lock.
ALTER TABLE code_attempts ADD COLUMN writer BIGINT;
ALTER TABLE code_attempts ADD COLUMN batch BIGINT;
