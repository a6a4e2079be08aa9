//! The saved sign-in: server URL, token and user, in the user's config directory
//! (`$NATTER_CONFIG_DIR`, else e.g. `~/.config/natter`), readable only by its owner.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What `natter login` remembers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The server the token is for.
    pub server: String,
    /// The access token.
    pub token: String,
    /// Expiry, unix milliseconds.
    pub expires_at: i64,
    /// The signed-in user's id.
    pub user_id: String,
    /// The signed-in user's username.
    pub username: String,
}

/// Directory holding `session.json`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NATTER_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    Ok(dirs::config_dir()
        .context("no config directory on this system; set NATTER_CONFIG_DIR")?
        .join("natter"))
}

fn path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("session.json"))
}

impl Session {
    /// Writes the session (mode 0600 on Unix).
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path()?;
        std::fs::create_dir_all(path.parent().expect("file in a directory"))?;
        let json = serde_json::to_string_pretty(self)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&path)?, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Reads the saved session.
    pub fn load() -> anyhow::Result<Self> {
        let path = path()?;
        let json = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "not signed in (no {}); run `natter login USERNAME`",
                path.display()
            )
        })?;
        serde_json::from_str(&json)
            .with_context(|| format!("{} is corrupt; log in again", path.display()))
    }
}
