//! The on-disk layout of a data file and the checks made when opening one.
//!
//! A data file is a redb database with these tables:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `dynamo_format` | name | format magic, format version, next hint id |
//! | `objects` | partition ++ escaped bucket ++ key (order-preserving) | record: `Object<Content>` |
//! | `hints` | hint id | record: owner, key, object, created_ms |
//! | `hints_by_owner` | (owner, hint id) | nothing (index for per-owner listing) |
//! | `meta` | name | caller's bytes (node id, epoch, ...) |
//!
//! Opening refuses, with a clear error and without changing the file: a file that is not redb,
//! a redb file some other program wrote (it has tables but not ours), a file with a newer
//! [`FORMAT_VERSION`], and a damaged file (see [`Options::verify_on_open`]).

use std::io::Read as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition, TableHandle as _};

use crate::error::{Error, Result};
use crate::options::Options;

/// Version of the data file layout this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Identifies a dynamo data file among redb files.
pub const FORMAT_MAGIC: &[u8] = b"dynamo-storage";

/// First bytes of every redb file (redb's own header magic), used to tell "not redb at all"
/// from "redb, but damaged" before redb is asked to parse it.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Internal bookkeeping: magic, format version, hint id counter.
pub(crate) const FORMAT: TableDefinition<&str, &[u8]> = TableDefinition::new("dynamo_format");
/// Objects by (partition, bucket, key), encoded by `keys::encode` so that byte order is key
/// order: one partition's keys are contiguous and ordered.
pub(crate) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
/// Hints by id.
pub(crate) const HINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("hints");
/// Index of hints by intended owner.
pub(crate) const HINTS_BY_OWNER: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("hints_by_owner");
/// Caller metadata.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// `dynamo_format` row holding [`FORMAT_MAGIC`].
pub(crate) const MAGIC_ROW: &str = "magic";
/// `dynamo_format` row holding the format version (u32 little endian).
pub(crate) const VERSION_ROW: &str = "format_version";
/// `dynamo_format` row holding the next hint id (u64 little endian).
pub(crate) const NEXT_HINT_ROW: &str = "next_hint_id";

/// Opens (creating if absent) the data file at `path`, checking that it is ours and readable.
///
/// An existing file is first inspected read-only, so a file that is refused (foreign, newer,
/// damaged) is left exactly as it was; redb's writable open would otherwise touch its header.
/// A file that was not closed cleanly cannot be opened read-only (redb must repair it first):
/// that one is checked right after the repairing open instead.
pub(crate) fn open_database(path: &Path, options: &Options) -> Result<Database> {
    let shown = path.display().to_string();
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_bytes);
    builder.set_check_integrity_on_open(options.verify_on_open);
    if has_redb_content(path, &shown)? {
        match guarded(&shown, || builder.open_read_only(path))? {
            Ok(db) => {
                inspect(&db, &shown)?;
            }
            Err(redb::DatabaseError::RepairAborted) => {}
            Err(err) => return Err(open_error(err, &shown)),
        }
    }
    let db = guarded(&shown, || builder.create(path))?.map_err(|err| open_error(err, &shown))?;
    if inspect(&db, &shown)? == Contents::Empty {
        init_format(&db)?;
    }
    Ok(db)
}

/// Runs a redb open, turning a panic into [`Error::Corrupt`]: redb documents that a plain open
/// may panic on a file damaged outside redb, and a bad disk must not take the node down.
fn guarded<T>(shown: &str, open: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(open)).map_err(|_| Error::Corrupt {
        path: shown.to_owned(),
        reason: "the redb header or tree is damaged".into(),
    })
}

/// Whether `path` holds anything: `false` if absent or empty, `true` if it starts with redb's
/// magic, and an error if it holds something else.
fn has_redb_content(path: &Path, shown: &str) -> Result<bool> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err.into()),
    };
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    file.by_ref()
        .take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut head)?;
    if head.is_empty() {
        return Ok(false);
    }
    if head == REDB_MAGIC {
        return Ok(true);
    }
    Err(Error::NotADataFile {
        path: shown.to_owned(),
        reason: "it is not a redb file".into(),
    })
}

/// Maps redb's open errors to ours.
fn open_error(err: redb::DatabaseError, shown: &str) -> Error {
    let path = shown.to_owned();
    match err {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            Error::AlreadyOpen { path }
        }
        redb::DatabaseError::UpgradeRequired(version) => Error::NotADataFile {
            path,
            reason: format!("it is in redb file format {version}, which this build cannot open"),
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            Error::Corrupt { path, reason }
        }
        other => Error::from(other),
    }
}

/// What [`inspect`] found in a redb file.
#[derive(Debug, PartialEq, Eq)]
enum Contents {
    /// A dynamo data file this build reads.
    Ours,
    /// No tables at all: a new file, to be initialised.
    Empty,
}

/// Checks that `db` is a dynamo data file of a format this build reads (or has no tables yet).
fn inspect(db: &impl ReadableDatabase, shown: &str) -> Result<Contents> {
    let read = db.begin_read()?;
    let tables: Vec<String> = read.list_tables()?.map(|t| t.name().to_owned()).collect();
    if tables.iter().any(|name| name == FORMAT.name()) {
        let format = read.open_table(FORMAT)?;
        let magic = format.get(MAGIC_ROW)?.map(|v| v.value().to_vec());
        if magic.as_deref() != Some(FORMAT_MAGIC) {
            return Err(Error::NotADataFile {
                path: shown.to_owned(),
                reason: "its format table does not carry the dynamo magic".into(),
            });
        }
        let version = format.get(VERSION_ROW)?.map(|v| v.value().to_vec());
        let version = version
            .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| Error::Corrupt {
                path: shown.to_owned(),
                reason: "the format version is missing or malformed".into(),
            })?;
        check_version(version, shown)?;
        return Ok(Contents::Ours);
    }
    if !tables.is_empty() || read.list_multimap_tables()?.next().is_some() {
        return Err(Error::NotADataFile {
            path: shown.to_owned(),
            reason: format!(
                "it is a redb file of another program (tables: {})",
                tables.join(", ")
            ),
        });
    }
    Ok(Contents::Empty)
}

/// Accepts format versions this build reads.
fn check_version(version: u32, shown: &str) -> Result<()> {
    if version > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            path: shown.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(Error::Corrupt {
            path: shown.to_owned(),
            reason: "format version 0".into(),
        });
    }
    Ok(())
}

/// Writes the format table and creates every table, durably, in one transaction.
fn init_format(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut format = txn.open_table(FORMAT)?;
        format.insert(MAGIC_ROW, FORMAT_MAGIC)?;
        format.insert(VERSION_ROW, FORMAT_VERSION.to_le_bytes().as_slice())?;
        format.insert(NEXT_HINT_ROW, 1u64.to_le_bytes().as_slice())?;
        txn.open_table(OBJECTS)?;
        txn.open_table(HINTS)?;
        txn.open_table(HINTS_BY_OWNER)?;
        txn.open_table(META)?;
    }
    txn.commit()?;
    Ok(())
}

/// Overwrites the recorded format version (tests of the newer-format refusal use this).
#[cfg(test)]
pub(crate) fn force_format_version(path: &Path, version: u32) -> Result<()> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(FORMAT)?
        .insert(VERSION_ROW, version.to_le_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Result<Database> {
        open_database(path, &Options::default())
    }

    #[test]
    fn a_new_file_is_initialised_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        drop(open(&path).unwrap());
        drop(open(&path).unwrap());
        assert!(path.exists());
    }

    #[test]
    fn an_empty_file_is_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        std::fs::write(&path, b"").unwrap();
        assert!(open(&path).is_ok());
    }

    #[test]
    fn garbage_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let garbage = b"this is a text file, not a database\n".repeat(200);
        std::fs::write(&path, &garbage).unwrap();
        let err = open(&path).unwrap_err();
        assert!(matches!(err, Error::NotADataFile { .. }), "{err}");
        assert!(err.to_string().contains("not a redb file"));
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn a_short_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        std::fs::write(&path, b"re").unwrap();
        assert!(matches!(open(&path), Err(Error::NotADataFile { .. })));
    }

    #[test]
    fn redb_magic_followed_by_garbage_is_refused_without_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let mut bytes = REDB_MAGIC.to_vec();
        bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
        std::fs::write(&path, &bytes).unwrap();
        assert!(open(&path).is_err());
    }

    #[test]
    fn a_foreign_redb_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let table: TableDefinition<&str, u64> = TableDefinition::new("users");
            txn.open_table(table).unwrap().insert("alice", &1).unwrap();
            txn.commit().unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = open(&path).unwrap_err();
        assert!(matches!(err, Error::NotADataFile { .. }), "{err}");
        assert!(err.to_string().contains("users"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the refused file is unchanged"
        );
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        drop(open(&path).unwrap());
        force_format_version(&path, FORMAT_VERSION + 1).unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = open(&path).unwrap_err();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the refused file is unchanged"
        );
        assert!(
            matches!(err, Error::NewerFormat { found, supported, .. } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
            "{err}"
        );
    }

    #[test]
    fn a_second_open_in_the_same_process_is_refused_while_the_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let _db = open(&path).unwrap();
        assert!(open(&path).is_err());
    }
}
