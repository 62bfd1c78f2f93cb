//! Trino's password file (`password-authenticator.name=file`, `file.password-file`): one
//! `user:hash` per line, the hash bcrypt (`$2y$`, cost 8 or more) or PBKDF2
//! (`iterations:salt:hash`, hex, HMAC-SHA256, 1000 iterations or more); re-read when it
//! changes (checked every `file.refresh-period`), keeping the last good version when the new
//! one is broken; successful checks are remembered (`file.auth-token-cache.max-size`), as
//! bcrypt is slow on purpose.
//!
//! Not wired to any endpoint yet: authentication (`http-server.authentication.type`) is
//! issue 20's next step, and this is its password check.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// Trino's defaults.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_SIZE: usize = 1000;
/// The weakest hashes Trino accepts.
const MIN_BCRYPT_COST: u32 = 8;
const MIN_PBKDF2_ITERATIONS: u32 = 1000;
/// The longest password file line read (a user name and a hash are far shorter).
const MAX_LINE: usize = 4096;

/// A password hash as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Bcrypt(String),
    Pbkdf2 { iterations: NonZeroU32, salt: Vec<u8>, hash: Vec<u8> },
}

/// Why a password file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordFileError {
    #[error("password file {path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("password file {path}, line {line}: {message}")]
    BadLine { path: String, line: usize, message: String },
}

/// Why a user was not authenticated (the message a client may see is the same for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticationError {
    #[error("Access Denied: Invalid credentials")]
    UnknownUser,
    #[error("Access Denied: Invalid credentials")]
    WrongPassword,
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn parse_hash(text: &str) -> Result<Hash, String> {
    if let Some(rest) = text.strip_prefix("$2y$") {
        let cost: u32 = rest.get(..2).and_then(|c| c.parse().ok()).ok_or("a bcrypt hash without a cost")?;
        if cost < MIN_BCRYPT_COST {
            return Err(format!("bcrypt cost {cost} is below {MIN_BCRYPT_COST}"));
        }
        return Ok(Hash::Bcrypt(text.to_string()));
    }
    if text.starts_with('$') {
        return Err("bcrypt hashes must start with $2y$ (htpasswd -B)".into());
    }
    let parts: Vec<&str> = text.split(':').collect();
    let [iterations, salt, hash] = parts.as_slice() else {
        return Err("neither bcrypt ($2y$...) nor PBKDF2 (iterations:salt:hash)".into());
    };
    let iterations: u32 = iterations.parse().map_err(|_| "PBKDF2 iterations are not a number")?;
    if iterations < MIN_PBKDF2_ITERATIONS {
        return Err(format!("PBKDF2 iterations {iterations} are below {MIN_PBKDF2_ITERATIONS}"));
    }
    let salt = unhex(salt).ok_or("the PBKDF2 salt is not hex")?;
    let hash = unhex(hash).ok_or("the PBKDF2 hash is not hex")?;
    let iterations = NonZeroU32::new(iterations).ok_or("PBKDF2 iterations are 0")?;
    Ok(Hash::Pbkdf2 { iterations, salt, hash })
}

/// Reads a password file's text: user to hash. Empty lines and `#` comments are skipped.
fn parse(path: &Path, text: &str) -> Result<HashMap<String, Hash>, PasswordFileError> {
    let mut users = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let bad =
            |message: String| PasswordFileError::BadLine { path: path.display().to_string(), line: index + 1, message };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(bad(format!("longer than {MAX_LINE} characters")));
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(bad("not user:hash".into()));
        };
        if user.is_empty() || user.len() > flotilla_proto::MAX_USER_LENGTH {
            return Err(bad("the user name is empty or too long".into()));
        }
        let hash = parse_hash(hash).map_err(bad)?;
        if users.insert(user.to_string(), hash).is_some() {
            return Err(bad(format!("user '{user}' is listed twice")));
        }
    }
    Ok(users)
}

fn verify(hash: &Hash, password: &str) -> bool {
    match hash {
        // bcrypt reads `$2y$` as `$2b$`: the same algorithm.
        Hash::Bcrypt(text) => bcrypt::verify(password, text).unwrap_or(false),
        Hash::Pbkdf2 { iterations, salt, hash } => {
            ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA256, *iterations, salt, password.as_bytes(), hash).is_ok()
        }
    }
}

#[derive(Debug)]
struct Loaded {
    users: HashMap<String, Hash>,
    modified: Option<SystemTime>,
    checked: Instant,
    /// (user, SHA-256 of the password) that authenticated against the current file.
    accepted: HashMap<(String, Vec<u8>), ()>,
}

/// A password file, re-read when it changes.
#[derive(Debug)]
pub struct PasswordFile {
    path: PathBuf,
    refresh: Duration,
    cache_size: usize,
    loaded: Mutex<Loaded>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<HashMap<String, Hash>, PasswordFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PasswordFileError::Unreadable { path: path.display().to_string(), message: e.to_string() })?;
    parse(path, &text)
}

impl PasswordFile {
    /// Reads `path` (an unusable file is an error: a node does not start with it).
    pub fn load(path: &Path, refresh: Duration, cache_size: usize) -> Result<Self, PasswordFileError> {
        let users = read(path)?;
        let loaded = Loaded { users, modified: modified(path), checked: Instant::now(), accepted: HashMap::new() };
        Ok(Self { path: path.to_path_buf(), refresh, cache_size, loaded: Mutex::new(loaded) })
    }

    /// Re-reads the file when `refresh` has passed and it changed; a broken new version is
    /// logged and the last good one kept.
    fn refresh(&self, loaded: &mut Loaded) {
        if loaded.checked.elapsed() < self.refresh {
            return;
        }
        loaded.checked = Instant::now();
        let now = modified(&self.path);
        if now == loaded.modified {
            return;
        }
        match read(&self.path) {
            Ok(users) => {
                loaded.users = users;
                loaded.modified = now;
                loaded.accepted.clear();
                tracing::info!(path = %self.path.display(), "password file reloaded");
            }
            Err(error) => tracing::warn!(%error, "password file changed but cannot be used; keeping the previous one"),
        }
    }

    fn cache_key(user: &str, password: &str) -> (String, Vec<u8>) {
        let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes()).as_ref().to_vec();
        (user.to_string(), digest)
    }

    /// Whether `user`'s `password` was accepted before (and the file has not changed since):
    /// the answer without the slow hash, for checking on an async thread.
    pub fn accepted_before(&self, user: &str, password: &str) -> bool {
        let key = Self::cache_key(user, password);
        let mut loaded = self.loaded.lock();
        self.refresh(&mut loaded);
        loaded.accepted.contains_key(&key)
    }

    /// Checks `user`'s `password` (slow on purpose when it was not accepted before: call it
    /// where blocking is fine).
    pub fn authenticate(&self, user: &str, password: &str) -> Result<(), AuthenticationError> {
        let key = Self::cache_key(user, password);
        let hash = {
            let mut loaded = self.loaded.lock();
            self.refresh(&mut loaded);
            if loaded.accepted.contains_key(&key) {
                return Ok(());
            }
            loaded.users.get(user).cloned().ok_or(AuthenticationError::UnknownUser)?
        };
        // Slow on purpose (bcrypt): outside the lock.
        if !verify(&hash, password) {
            return Err(AuthenticationError::WrongPassword);
        }
        let mut loaded = self.loaded.lock();
        if loaded.accepted.len() >= self.cache_size {
            loaded.accepted.clear();
        }
        loaded.accepted.insert(key, ());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pbkdf2_line(user: &str, password: &str, iterations: u32) -> String {
        let salt = b"flotilla-salt";
        let mut hash = [0u8; 32];
        let rounds = NonZeroU32::new(iterations).unwrap();
        ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password.as_bytes(), &mut hash);
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        format!("{user}:{iterations}:{}:{}", hex(salt), hex(&hash))
    }

    fn bcrypt_line(user: &str, password: &str) -> String {
        // `htpasswd -B` writes $2y$; the bcrypt crate writes $2b$, the same algorithm.
        let hash = bcrypt::hash(password, 8).unwrap().replacen("$2b$", "$2y$", 1);
        format!("{user}:{hash}")
    }

    struct File(PathBuf);

    impl File {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("flotilla-passwords-{}-{name}", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn bcrypt_and_pbkdf2_users_authenticate_and_nobody_else_does() {
        let text = format!("# users\n{}\n\n{}\n", bcrypt_line("alice", "s3cret"), pbkdf2_line("bob", "hunter2", 1000));
        let file = File::new("both", &text);
        let passwords = PasswordFile::load(&file.0, DEFAULT_REFRESH, DEFAULT_CACHE_SIZE).unwrap();
        assert_eq!(passwords.authenticate("alice", "s3cret"), Ok(()));
        assert_eq!(passwords.authenticate("alice", "s3cret"), Ok(()), "remembered");
        assert_eq!(passwords.authenticate("bob", "hunter2"), Ok(()));
        assert_eq!(passwords.authenticate("alice", "hunter2"), Err(AuthenticationError::WrongPassword));
        assert_eq!(passwords.authenticate("bob", ""), Err(AuthenticationError::WrongPassword));
        assert_eq!(passwords.authenticate("carol", "s3cret"), Err(AuthenticationError::UnknownUser));
        // Both say the same to a client.
        assert_eq!(AuthenticationError::UnknownUser.to_string(), AuthenticationError::WrongPassword.to_string());
    }

    #[test]
    fn weak_malformed_and_hostile_files_are_refused_with_the_line() {
        for (text, expected) in [
            ("alice", "not user:hash"),
            ("alice:$2a$10$abcdefghijklmnopqrstuv", "must start with $2y$"),
            ("alice:$2y$04$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabc", "below 8"),
            ("alice:999:00:00", "below 1000"),
            ("alice:1000:zz:00", "salt is not hex"),
            ("alice:1000:00:0", "hash is not hex"),
            ("alice:1000:00", "neither bcrypt"),
            (":1000:00:00", "user name"),
        ] {
            let file = File::new("bad", text);
            let error = PasswordFile::load(&file.0, DEFAULT_REFRESH, DEFAULT_CACHE_SIZE).unwrap_err();
            assert!(error.to_string().contains(expected) && error.to_string().contains("line 1"), "{text}: {error}");
        }
        let twice = File::new("twice", &format!("{}\n{}", pbkdf2_line("a", "x", 1000), pbkdf2_line("a", "y", 1000)));
        assert!(PasswordFile::load(&twice.0, DEFAULT_REFRESH, 10).unwrap_err().to_string().contains("line 2"));
        let huge = File::new("huge", &format!("a:{}", "1".repeat(MAX_LINE + 1)));
        assert!(PasswordFile::load(&huge.0, DEFAULT_REFRESH, 10).is_err());
        let missing = PasswordFile::load(Path::new("/nonexistent/password.db"), DEFAULT_REFRESH, 10).unwrap_err();
        assert!(matches!(missing, PasswordFileError::Unreadable { .. }), "{missing}");
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let file = File::new("reload", &pbkdf2_line("alice", "old", 1000));
        let passwords = PasswordFile::load(&file.0, Duration::ZERO, 10).unwrap();
        assert_eq!(passwords.authenticate("alice", "old"), Ok(()));
        // Some file systems keep whole seconds of modification time.
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(&file.0, pbkdf2_line("alice", "new", 1000)).unwrap();
        assert_eq!(passwords.authenticate("alice", "old"), Err(AuthenticationError::WrongPassword));
        assert_eq!(passwords.authenticate("alice", "new"), Ok(()));
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(&file.0, "garbage").unwrap();
        assert_eq!(passwords.authenticate("alice", "new"), Ok(()), "the last good file stays");
    }
}
