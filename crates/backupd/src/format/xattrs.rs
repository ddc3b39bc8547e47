//! Extended attributes in archives: POSIX ACLs (`system.posix_acl_access`, `…_default`), file
//! capabilities (`security.capability`), `user.*` and the rest, read from a file's handle and
//! stored in a pax extended header before its entry. Without them a restored file loses its
//! ACL, and its group bits (which hold the ACL's mask) may then grant its group more than the
//! ACL did.
//!
//! An attribute goes in a `SCHILY.xattr.NAME` record, raw, as GNU tar `--xattrs` and bsdtar
//! write it; one whose name is not plain text or whose value holds a newline (which the tar
//! reader cannot take back raw) goes in a `LIBARCHIVE.xattr.NAME` record, its name
//! %-escaped and its value in base64, as bsdtar writes it. SELinux labels are left out, as
//! GNU tar leaves them without `--selinux`: the policy labels restored files (`restorecon`);
//! so is EVM's `security.evm`, an HMAC keyed by the machine, which no other could set.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use rustix::io::Errno;

/// The pax key prefix of an attribute stored raw.
pub const PAX_PREFIX: &str = "SCHILY.xattr.";
/// The pax key prefix of an attribute stored escaped and in base64.
pub const ENCODED_PAX_PREFIX: &str = "LIBARCHIVE.xattr.";
/// What the machine's security policy gives a file, never carried to another.
const LEFT_OUT: &[&[u8]] = &[b"security.selinux", b"security.evm"];

fn is_left_out(name: &[u8]) -> bool {
    LEFT_OUT.contains(&name)
}

/// The most bytes Linux gives a list of names, and a value (`XATTR_LIST_MAX`, `XATTR_SIZE_MAX`).
const XATTR_MAX: usize = 64 << 10;

/// The most bytes of names and values one file's attributes are stored with. Some file
/// systems hold thousands of 64 KiB values: stored whole, a file's owner could make a header
/// past what the readers take (`store::header_limit`), and so the archive unrestorable.
pub const STORED_AT_MOST: usize = 1 << 20;

/// One extended attribute: its name (`user.note`) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Reads the extended attributes of open files, through one buffer reused from file to file.
#[derive(Debug)]
pub struct XattrReader {
    buffer: Vec<u8>,
    at_most: usize,
}

impl Default for XattrReader {
    fn default() -> Self {
        XattrReader {
            buffer: Vec::new(),
            at_most: STORED_AT_MOST,
        }
    }
}

impl XattrReader {
    /// The attributes of `fd`'s file, in the order the file system lists them. A file system
    /// without them gives none; an attribute removed since the listing is left out. More than
    /// [`STORED_AT_MOST`] bytes of them in all is an error.
    pub fn read(&mut self, fd: impl AsFd) -> io::Result<Vec<Xattr>> {
        if self.buffer.is_empty() {
            self.buffer = vec![0; XATTR_MAX];
        }
        let listed = match rustix::fs::flistxattr(&fd, &mut self.buffer[..]) {
            Ok(0) | Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Ok(listed) => listed,
            Err(e) => return Err(e.into()),
        };
        let names: Vec<Vec<u8>> = self.buffer[..listed]
            .split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let mut xattrs = Vec::with_capacity(names.len());
        let mut stored = 0;
        for name in names.into_iter().filter(|name| !is_left_out(name)) {
            match rustix::fs::fgetxattr(&fd, OsStr::from_bytes(&name), &mut self.buffer[..]) {
                Ok(size) => {
                    stored += name.len() + size;
                    if stored > self.at_most {
                        return Err(io::Error::new(
                            io::ErrorKind::FileTooLarge,
                            format!("more than {} bytes in all", self.at_most),
                        ));
                    }
                    xattrs.push(Xattr {
                        value: self.buffer[..size].to_vec(),
                        name,
                    });
                }
                Err(Errno::NODATA) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(xattrs)
    }
}

/// The pax records (key, value) that hold `xattrs`.
pub fn pax_records(xattrs: &[Xattr]) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    xattrs
        .iter()
        .map(|xattr| match std::str::from_utf8(&xattr.name) {
            Ok(name) if !name.contains(needs_escape) && !xattr.value.contains(&b'\n') => {
                (format!("{PAX_PREFIX}{name}"), xattr.value.clone())
            }
            _ => {
                let mut key = ENCODED_PAX_PREFIX.to_owned();
                for byte in &xattr.name {
                    if needs_escape(char::from(*byte)) {
                        key.push_str(&format!("%{byte:02X}"));
                    } else {
                        key.push(char::from(*byte));
                    }
                }
                let value = base64::engine::general_purpose::STANDARD.encode(&xattr.value);
                (key, value.into_bytes())
            }
        })
        .collect()
}

/// Characters a name is %-escaped for: not printable ASCII, `%` itself, and the `=` that
/// ends a pax key.
fn needs_escape(c: char) -> bool {
    !c.is_ascii_graphic() || c == '%' || c == '='
}

/// The extended attributes a tar entry's pax header carries, each once (a `LIBARCHIVE`
/// record before a `SCHILY` one of the same name: bsdtar writes both). A record the tar reader
/// cannot parse (a raw value with a newline, as GNU tar may write) is an error.
pub fn of_entry<R: io::Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<Xattr>> {
    use base64::Engine;
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(Vec::new());
    };
    let mut raw = Vec::new();
    let mut encoded = Vec::new();
    for extension in extensions {
        let extension = extension?;
        let key = extension.key_bytes();
        if let Some(name) = key.strip_prefix(PAX_PREFIX.as_bytes()) {
            raw.push(Xattr {
                name: name.to_vec(),
                value: extension.value_bytes().to_vec(),
            });
        } else if let Some(name) = key.strip_prefix(ENCODED_PAX_PREFIX.as_bytes()) {
            let bad = |what: &str| {
                let key = String::from_utf8_lossy(key);
                io::Error::new(io::ErrorKind::InvalidData, format!("{key}: {what}"))
            };
            let value = base64::engine::general_purpose::STANDARD
                .decode(extension.value_bytes())
                .map_err(|_| bad("not base64"))?;
            let name = unescape(name).ok_or_else(|| bad("a bad %-escape"))?;
            encoded.push(Xattr { name, value });
        }
    }
    raw.retain(|xattr| !encoded.iter().any(|e| e.name == xattr.name));
    encoded.extend(raw);
    encoded.retain(|xattr| !is_left_out(&xattr.name));
    Ok(encoded)
}

/// `%XX` escapes undone.
fn unescape(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut rest = name;
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[2..];
        } else {
            out.push(byte);
            rest = after;
        }
    }
    Some(out)
}

/// Whether a user other than root may set the attribute `name` on a file of their own: the
/// `user.*` namespace and ACLs, not `trusted.*` nor `security.*` (a file capability).
pub fn settable_by_owner(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"system.posix_acl_")
}

/// Sets `xattrs` on `fd`'s file: after its owner (`chown` clears a file capability) and its
/// mode (the ACL's mask is the mode's group bits). The names of those not set, with why.
pub fn set_all(fd: impl AsFd, xattrs: &[Xattr]) -> Vec<String> {
    let mut failed = Vec::new();
    for xattr in xattrs {
        let name = OsStr::from_bytes(&xattr.name);
        let flags = rustix::fs::XattrFlags::empty();
        if let Err(e) = rustix::fs::fsetxattr(&fd, name, &xattr.value, flags) {
            failed.push(format!(
                "{} ({})",
                String::from_utf8_lossy(&xattr.name),
                io::Error::from(e)
            ));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_go_through_a_pax_header_to_their_entry() {
        let note = Xattr {
            name: b"user.note".to_vec(),
            value: b"hello\0bytes=".to_vec(),
        };
        // Around a length of 100, whose digits count in it.
        let long = Xattr {
            name: b"user.b".to_vec(),
            value: vec![b'x'; 76],
        };
        let odd = Xattr {
            name: b"user.\xff=%".to_vec(),
            value: b"encoded".to_vec(),
        };
        let newline = Xattr {
            name: b"user.text".to_vec(),
            value: b"two\nlines".to_vec(),
        };
        let label = Xattr {
            name: LEFT_OUT[0].to_vec(),
            value: b"system_u:object_r:etc_t:s0".to_vec(),
        };
        let xattrs = [
            note.clone(),
            long.clone(),
            odd.clone(),
            newline.clone(),
            label,
        ];
        let records = pax_records(&xattrs);
        let keys: Vec<&str> = records.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "SCHILY.xattr.user.note",
                "SCHILY.xattr.user.b",
                "LIBARCHIVE.xattr.user.%FF%3D%25",
                "LIBARCHIVE.xattr.user.text",
                "SCHILY.xattr.security.selinux",
            ]
        );
        let mut builder = tar::Builder::new(Vec::new());
        let records = records
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_slice()));
        builder.append_pax_extensions(records).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        builder.append_data(&mut header, "f", io::empty()).unwrap();
        builder.append_data(&mut header, "g", io::empty()).unwrap();
        let bytes = builder.into_inner().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut first = entries.next().unwrap().unwrap();
        assert_eq!(first.path().unwrap(), std::path::Path::new("f"));
        // The encoded first; a label is never restored.
        assert_eq!(of_entry(&mut first).unwrap(), [odd, newline, note, long]);
        drop(first);
        let mut second = entries.next().unwrap().unwrap();
        assert_eq!(of_entry(&mut second).unwrap(), []);
    }

    #[test]
    fn what_a_file_holds_is_read_back_and_set_on_another() {
        let dir = tempfile::tempdir().unwrap();
        let from = std::fs::File::create(dir.path().join("from")).unwrap();
        let flags = rustix::fs::XattrFlags::empty();
        if let Err(e) = rustix::fs::fsetxattr(&from, "user.note", b"hello\0bytes", flags) {
            panic!("this file system must hold user attributes for the test: {e}");
        }
        let mut reader = XattrReader::default();
        let read = reader.read(&from).unwrap();
        let note = Xattr {
            name: b"user.note".to_vec(),
            value: b"hello\0bytes".to_vec(),
        };
        assert!(read.contains(&note), "{read:?}");
        let to = std::fs::File::create(dir.path().join("to")).unwrap();
        assert_eq!(set_all(&to, &read), Vec::<String>::new());
        assert!(reader.read(&to).unwrap().contains(&note));
        assert!(settable_by_owner(b"user.note") && settable_by_owner(b"system.posix_acl_access"));
        assert!(!settable_by_owner(b"security.capability") && !settable_by_owner(b"trusted.x"));

        // Past the bound, none is stored: a header no reader refuses.
        let mut small = XattrReader {
            buffer: Vec::new(),
            at_most: "user.note".len() + 5,
        };
        let err = small.read(&from).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{err}");
    }
}
