//! The recorded prompts found in `AUDIO_DIR`.

use crate::domain::prompt::Prompt;

/// The recorded prompts found in `AUDIO_DIR` at start-up.
#[derive(Debug, Clone, Default)]
pub struct AudioCatalog {
    files: std::collections::BTreeMap<Prompt, String>,
}

impl AudioCatalog {
    /// Looks for `<name>.mp3` then `<name>.wav` for each prompt. A missing folder is fine:
    /// every prompt is then spoken with `<Say>`.
    pub fn scan(dir: &std::path::Path) -> AudioCatalog {
        let mut files = std::collections::BTreeMap::new();
        for prompt in Prompt::ALL {
            for ext in ["mp3", "wav"] {
                let file = format!("{}.{ext}", prompt.name());
                if dir.join(&file).is_file() {
                    files.insert(*prompt, file);
                    break;
                }
            }
        }
        AudioCatalog { files }
    }

    /// The file name of a prompt's recording, if there is one.
    pub fn file(&self, prompt: Prompt) -> Option<&str> {
        self.files.get(&prompt).map(String::as_str)
    }
}
