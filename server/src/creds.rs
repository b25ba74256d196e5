//! The account the children run as: resolved by the parent (NSS lookups are not fork-safe in
//! general), applied by each child right after its root-only set-up. The supplementary groups are
//! resolved by the parent too (`getgrouplist`, what `initgroups` would do in each child): a child
//! then makes no NSS call at all, and does not load NSS modules (each would cost every child its
//! own relocated pages).

use nix::unistd::{Gid, Group, Uid, User, geteuid, getgrouplist, setgid, setgroups, setuid};
use std::ffi::CString;

/// The resolved `user`/`group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    /// The supplementary groups: the user's groups from the group database and `gid` (only `gid`
    /// for a numeric uid without a passwd entry).
    pub(crate) groups: Vec<Gid>,
    /// How it was configured, for messages.
    pub(crate) label: String,
}

fn parse_id(s: &str) -> Option<u32> {
    s.strip_prefix('#')?.parse().ok()
}

/// Resolves `user`/`group` for the children. Running as root without `user` is refused: children
/// run code that parses requests from the network, and must not do it as root unless the operator
/// says so explicitly (`user = "root"`). Not running as root: the children run as the parent does
/// and `user`/`group` are ignored (returns `None`, with the reason).
pub(crate) fn resolve(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(Option<Credentials>, Option<String>), String> {
    if !geteuid().is_root() {
        let note = (user.is_some() || group.is_some())
            .then(|| format!("not running as root: user/group are ignored and children run as uid {}", geteuid()));
        return Ok((None, note));
    }
    let Some(user) = user else {
        return Err(
            "running as root: set `user` (and optionally `group`) for the children, e.g. user = \"www-data\"; \
                    to run them as root anyway, say so with user = \"root\""
                .into(),
        );
    };
    let (uid, name, primary) = match parse_id(user) {
        Some(id) => {
            let entry = User::from_uid(Uid::from_raw(id)).map_err(|e| format!("user {user}: {e}"))?;
            (Uid::from_raw(id), entry.as_ref().map(|u| u.name.clone()), entry.map(|u| u.gid))
        }
        None => {
            let entry = User::from_name(user)
                .map_err(|e| format!("user {user:?}: {e}"))?
                .ok_or_else(|| format!("user {user:?} does not exist (see /etc/passwd, or use #uid)"))?;
            (entry.uid, Some(entry.name), Some(entry.gid))
        }
    };
    let gid = match group {
        Some(g) => match parse_id(g) {
            Some(id) => Gid::from_raw(id),
            None => {
                Group::from_name(g)
                    .map_err(|e| format!("group {g:?}: {e}"))?
                    .ok_or_else(|| format!("group {g:?} does not exist (see /etc/group, or use #gid)"))?
                    .gid
            }
        },
        None => primary.ok_or_else(|| format!("user {user} has no passwd entry: set `group` too"))?,
    };
    let groups = match name {
        Some(n) => {
            let n = CString::new(n).map_err(|_| format!("user name {user:?} contains NUL"))?;
            getgrouplist(&n, gid).map_err(|e| format!("the groups of user {user:?}: {e}"))?
        }
        None => vec![gid],
    };
    let note = uid.is_root().then(|| "children run as root, as configured (user = root)".to_string());
    let label = format!("{user}{}", group.map(|g| format!(":{g}")).unwrap_or_default());
    Ok((Some(Credentials { uid, gid, groups, label }), note))
}

impl Credentials {
    /// Child: drops to this account (setgid, setgroups, setuid, in that order), then checks that
    /// root cannot be regained.
    pub(crate) fn apply(&self) -> Result<(), String> {
        setgid(self.gid).map_err(|e| format!("setgid({}): {e}", self.gid))?;
        setgroups(&self.groups).map_err(|e| format!("setgroups: {e}"))?;
        setuid(self.uid).map_err(|e| format!("setuid({}): {e}", self.uid))?;
        if !self.uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
            return Err("privileges could be regained after setuid".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_needs_an_explicit_user_and_unknown_accounts_are_named() {
        if !geteuid().is_root() {
            let (c, note) = resolve(Some("nobody"), None).unwrap();
            assert!(c.is_none() && note.unwrap().contains("ignored"));
            return;
        }
        let err = resolve(None, None).unwrap_err();
        assert!(err.contains("set `user`") && err.contains("user = \"root\""), "{err}");
        let err = resolve(Some("no-such-user-xyz"), None).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = resolve(Some("nobody"), Some("no-such-group-xyz")).unwrap_err();
        assert!(err.contains("group \"no-such-group-xyz\" does not exist"), "{err}");
        let (c, note) = resolve(Some("nobody"), None).unwrap();
        let c = c.unwrap();
        assert_eq!(c.uid, User::from_name("nobody").unwrap().unwrap().uid);
        assert!(note.is_none());
        let (c, note) = resolve(Some("root"), None).unwrap();
        assert!(c.unwrap().uid.is_root() && note.unwrap().contains("as configured"));
        let (c, _) = resolve(Some("#4242"), Some("#4242")).unwrap();
        let c = c.unwrap();
        assert_eq!((c.uid.as_raw(), c.gid.as_raw(), c.groups), (4242, 4242, vec![Gid::from_raw(4242)]));
        // A user's groups from the group database, as initgroups would set them.
        let (c, _) = resolve(Some("root"), None).unwrap();
        let c = c.unwrap();
        let wanted = getgrouplist(c"root", Gid::from_raw(0)).unwrap();
        assert!(c.groups.contains(&Gid::from_raw(0)) && c.groups == wanted, "{:?}", c.groups);
    }
}
