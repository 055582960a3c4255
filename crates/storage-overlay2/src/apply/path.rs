//! Entry names: normalisation into safe single components, and display in errors.

/// Longest entry path we accept (Linux `PATH_MAX`).
pub(crate) const PATH_MAX: usize = 4096;
/// Longest single component (Linux `NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

/// Why an entry path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathProblem {
    TooLong(usize),
    ComponentTooLong(usize),
    DotDot,
    Nul,
}

/// Splits a tar path into components that are each safe to pass to an `*at` call on a
/// directory fd: never empty, never `.` or `..`, no `/`, no NUL, at most [`NAME_MAX`] bytes.
/// Leading `/` and `./` are dropped (absolute names are relative to the layer root); any `..`
/// refuses the entry, even one that would stay inside, since no honest layer writer emits it.
pub(crate) fn components(raw: &[u8]) -> Result<Vec<&[u8]>, PathProblem> {
    if raw.len() > PATH_MAX {
        return Err(PathProblem::TooLong(raw.len()));
    }
    if raw.contains(&0) {
        return Err(PathProblem::Nul);
    }
    let mut out = Vec::with_capacity(8);
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathProblem::DotDot),
            c if c.len() > NAME_MAX => return Err(PathProblem::ComponentTooLong(c.len())),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `a/b/c` from components (the key of a directory in the final pass, and error text).
pub(crate) fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c);
    }
    v
}

/// A name as shown in errors: quoted, control characters escaped, and over 200 bytes cut in
/// the middle (the head and the tail are what identify it), so a hostile 1 MiB name does not
/// become a 1 MiB log line.
pub(crate) fn show(raw: &[u8]) -> String {
    const KEEP: usize = 100;
    let text = |b: &[u8]| -> String { String::from_utf8_lossy(b).escape_debug().collect() };
    if raw.len() > 2 * KEEP {
        format!(
            "`{}...{}` ({} bytes)",
            text(&raw[..KEEP]),
            text(&raw[raw.len() - KEEP..]),
            raw.len()
        )
    } else {
        format!("`{}`", text(raw))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        assert_eq!(
            components(b"./a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert_eq!(components(b"/etc/x").unwrap(), vec![&b"etc"[..], b"x"]);
        assert!(components(b"./").unwrap().is_empty());
        assert_eq!(components(b"../escape"), Err(PathProblem::DotDot));
        assert_eq!(components(b"a/../../x"), Err(PathProblem::DotDot));
        assert_eq!(components(b"a/b\0c"), Err(PathProblem::Nul));
        assert_eq!(
            components(&[b'a'; 256]),
            Err(PathProblem::ComponentTooLong(256))
        );
        assert_eq!(components(&[b'a'; 4097]), Err(PathProblem::TooLong(4097)));
        assert_eq!(components(b"...").unwrap(), vec![&b"..."[..]]);
    }

    #[test]
    fn shows_short_and_escaped() {
        assert_eq!(show(b"a\nb"), "`a\\nb`");
        let mut name = vec![b'x'; 5000];
        name.extend_from_slice(b"/tail");
        let long = show(&name);
        assert!(
            long.len() < 300 && long.ends_with("/tail` (5005 bytes)"),
            "{long}"
        );
    }
}
