//! The server key file: the server's own secrets (today the Ed25519 keys that sign access
//! tokens), created with mode 0600 on first run. Rotation adds a new signing key and keeps the
//! previous ones for verification, so tokens already issued stay valid until they expire.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use copains_backend::auth::JwtKeyPair;
use serde::{Deserialize, Serialize};

/// Keys kept after a rotation (besides the current one).
const RETIRED_KEPT: usize = 2;

#[derive(Serialize, Deserialize)]
struct KeyFileData {
    version: u32,
    /// Newest first; the first signs.
    jwt_keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_at: i64,
    pkcs8: String,
}

/// The loaded keys.
pub struct Keys {
    /// Signs new access tokens.
    pub signing: JwtKeyPair,
    /// Still verify tokens they signed.
    pub retired: Vec<JwtKeyPair>,
}

/// Loads the key file, creating it (mode 0600) if it does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<Keys> {
    if !path.exists() {
        let data = KeyFileData { version: 1, jwt_keys: vec![new_key()?] };
        write(path, &data, true)?;
        tracing::info!(path = %path.display(), "created key file");
    }
    check_mode(path)?;
    let data = read(path)?;
    let mut keys = data
        .jwt_keys
        .iter()
        .map(|k| {
            let der = STANDARD.decode(&k.pkcs8).context("key file: bad base64")?;
            JwtKeyPair::from_pkcs8(k.kid.clone(), &der).map_err(anyhow::Error::msg)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!("key file {} holds no signing key; delete it to create a new one", path.display());
    }
    let signing = keys.remove(0);
    Ok(Keys { signing, retired: keys })
}

/// Adds a new signing key; the previous ones verify only. Returns the new key id.
pub fn rotate(path: &Path) -> anyhow::Result<String> {
    check_mode(path)?;
    let mut data = read(path)?;
    let key = new_key()?;
    let kid = key.kid.clone();
    data.jwt_keys.insert(0, key);
    data.jwt_keys.truncate(1 + RETIRED_KEPT);
    write(path, &data, false)?;
    Ok(kid)
}

fn new_key() -> anyhow::Result<StoredKey> {
    use ring::rand::SecureRandom as _;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut id = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut id).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let kid: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let (_, pkcs8) = JwtKeyPair::generate(kid.clone()).map_err(anyhow::Error::msg)?;
    Ok(StoredKey { kid, created_at: now, pkcs8: STANDARD.encode(pkcs8) })
}

fn read(path: &Path) -> anyhow::Result<KeyFileData> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let data: KeyFileData = serde_json::from_str(&text)
        .with_context(|| format!("key file {} is not valid; restore it from backup", path.display()))?;
    if data.version != 1 {
        bail!("key file {} has unknown version {}", path.display(), data.version);
    }
    Ok(data)
}

fn write(path: &Path, data: &KeyFileData, create_new: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(data)?;
    // Write a temporary file with mode 0600 from the start, then rename over the old one.
    let tmp = path.with_extension("key.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if create_new && path.exists() {
        bail!("key file {} appeared while creating it", path.display());
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

fn check_mode(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!("key file {} is readable by others (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_with_0600_and_rotation_keeps_old_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("copains.key");
        let first = load_or_create(&path).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        }
        let again = load_or_create(&path).expect("reload");
        assert_eq!(first.signing.kid(), again.signing.kid(), "same key on restart");

        let kid = rotate(&path).expect("rotate");
        let rotated = load_or_create(&path).expect("reload");
        assert_eq!(rotated.signing.kid(), kid);
        assert_eq!(rotated.retired.len(), 1);
        assert_eq!(rotated.retired[0].kid(), first.signing.kid());
    }

    #[test]
    fn a_world_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("copains.key");
        load_or_create(&path).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            let err = load_or_create(&path).err().expect("refused");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }
}
