-- The PaymentIntent's client secret, hashed: proves a success page's right to see the order.
ALTER TABLE orders ADD COLUMN client_secret_hash TEXT;
