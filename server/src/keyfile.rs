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
use copains_backend::secrets::DataKey;
use serde::{Deserialize, Serialize};

/// Keys kept after a rotation (besides the current one).
const RETIRED_KEPT: usize = 2;

#[derive(Serialize, Deserialize)]
struct KeyFileData {
    version: u32,
    /// Newest first; the first signs.
    jwt_keys: Vec<StoredKey>,
    /// Keys the hashes of client addresses (32 bytes, base64). Added to an older file on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint_key: Option<String>,
    /// Data keys that seal what the database keeps about clients; newest first, the first
    /// seals. Added to an older file on load.
    #[serde(default)]
    data_keys: Vec<StoredDataKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredDataKey {
    id: u32,
    created_at: i64,
    key: String,
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
    /// Keys the hashes of client addresses.
    pub fingerprint_key: [u8; 32],
    /// Data keys, newest first.
    pub data_keys: Vec<DataKey>,
}

/// Loads the key file, creating it (mode 0600) if it does not exist, and adding the keys a
/// file from an older version lacks.
pub fn load_or_create(path: &Path) -> anyhow::Result<Keys> {
    if !path.exists() {
        let data = KeyFileData {
            version: 1,
            jwt_keys: vec![new_key()?],
            fingerprint_key: Some(STANDARD.encode(random_32()?)),
            data_keys: vec![new_data_key(1)?],
        };
        write(path, &data, true)?;
        tracing::info!(path = %path.display(), "created key file");
    }
    check_mode(path)?;
    let mut data = read(path)?;
    if data.fingerprint_key.is_none() || data.data_keys.is_empty() {
        if data.fingerprint_key.is_none() {
            data.fingerprint_key = Some(STANDARD.encode(random_32()?));
        }
        if data.data_keys.is_empty() {
            data.data_keys.push(new_data_key(1)?);
        }
        write(path, &data, false)?;
        tracing::info!(path = %path.display(), "added the address and data keys to the key file");
    }
    let fingerprint_key = decode_32(data.fingerprint_key.as_deref().unwrap_or_default())?;
    let data_keys = data_keys_of(&data)?;
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
    Ok(Keys { signing, retired: keys, fingerprint_key, data_keys })
}

/// The data keys the file holds now, newest first (a running server reads them again after
/// `rotate-key`).
pub fn read_data_keys(path: &Path) -> anyhow::Result<Vec<DataKey>> {
    data_keys_of(&read(path)?)
}

/// Adds a new data key, which seals from now on; the previous ones still open. Returns it.
pub fn add_data_key(path: &Path) -> anyhow::Result<u32> {
    check_mode(path)?;
    let mut data = read(path)?;
    let id = data.data_keys.iter().map(|k| k.id).max().unwrap_or(0).checked_add(1).context("data key numbers exhausted")?;
    data.data_keys.insert(0, new_data_key(id)?);
    write(path, &data, false)?;
    Ok(id)
}

/// Keeps only the data keys in `keep` (after every value sealed under the others was sealed
/// again).
pub fn retain_data_keys(path: &Path, keep: &[u32]) -> anyhow::Result<()> {
    check_mode(path)?;
    let mut data = read(path)?;
    if data.data_keys.first().map(|k| k.id) != keep.first().copied() {
        bail!("the newest data key of {} is not the one expected; another rotation ran meanwhile", path.display());
    }
    data.data_keys.retain(|k| keep.contains(&k.id));
    if data.data_keys.is_empty() {
        bail!("refusing to remove every data key from {}", path.display());
    }
    write(path, &data, false)
}

fn data_keys_of(data: &KeyFileData) -> anyhow::Result<Vec<DataKey>> {
    data.data_keys.iter().map(|k| Ok(DataKey { id: k.id, key: decode_32(&k.key)? })).collect()
}

fn decode_32(b64: &str) -> anyhow::Result<[u8; 32]> {
    let raw = STANDARD.decode(b64).context("key file: bad base64")?;
    raw.try_into().map_err(|_| anyhow::anyhow!("key file: a key is not 32 bytes"))
}

fn random_32() -> anyhow::Result<[u8; 32]> {
    use ring::rand::SecureRandom as _;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut key).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(key)
}

fn new_data_key(id: u32) -> anyhow::Result<StoredDataKey> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Ok(StoredDataKey { id, created_at: now, key: STANDARD.encode(random_32()?) })
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
