//! Authentication on a member: who a request comes from, tokens issued
//! and checked, passwords hashed and verified, and the permission checks
//! of what is served here without Raft (reads, watches, lease queries,
//! admin calls). Writes go through `write_as`: checked here against the
//! local state for a quick, clear refusal, then wrapped with their caller
//! and judged again when applied (`store::authorize`).
//!
//! Tokens are signed, not stored: `user.revision.expiry.mac`, the MAC an
//! HMAC-SHA256 under the key the cluster chose when auth was last enabled
//! (in the replicated state), so a token from any member works on every
//! member, and disabling auth voids them all. A token is void once its
//! user is deleted or its password changed after it was issued. It is
//! valid for `--auth-token-ttl` after it was issued, and, as etcd's simple
//! tokens, for that long after it was last used on a member (each member
//! remembers the tokens it saw, up to `MAX_REMEMBERED`).
//!
//! bcrypt runs on the blocking pool: a password check costs tens of
//! milliseconds by design.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::Node;
use crate::error::{Error, Result};
use crate::store::{AuthCommand, AuthError, AuthState, Command, KeyRange, Response, Revision, Txn};

/// The longest token accepted (ours are ~100 bytes plus the user name).
const MAX_TOKEN: usize = 4096;
/// How many recently used tokens a member remembers, to extend them.
const MAX_REMEMBERED: usize = 65_536;
/// The longest password hashed or checked (bcrypt reads 72 bytes).
const MAX_PASSWORD: usize = 4096;

/// Tokens this member saw in use: when each was last used here.
pub(super) struct Tokens {
    ttl: Duration,
    seen: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl Tokens {
    pub(super) fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn key(auth: &AuthState) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &auth.token_key)
    }

    /// A token for `user`, issued at auth revision `auth.revision`.
    fn issue(&self, auth: &AuthState, user: &str) -> String {
        let expires = unix_now() + self.ttl.as_secs();
        let body = format!(
            "{}.{}.{expires}",
            URL_SAFE_NO_PAD.encode(user),
            auth.revision
        );
        let mac = ring::hmac::sign(&Tokens::key(auth), body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    }

    /// The user `token` names, if it is valid now.
    fn verify(&self, auth: &AuthState, token: &str) -> std::result::Result<String, AuthError> {
        let invalid = AuthError::InvalidToken;
        if token.len() > MAX_TOKEN || auth.token_key.is_empty() {
            return Err(invalid);
        }
        let (body, mac) = token.rsplit_once('.').ok_or(invalid)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| invalid)?;
        ring::hmac::verify(&Tokens::key(auth), body.as_bytes(), &mac).map_err(|_| invalid)?;
        let mut parts = body.split('.');
        let (Some(user), Some(revision), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid);
        };
        let user = URL_SAFE_NO_PAD
            .decode(user)
            .ok()
            .and_then(|u| String::from_utf8(u).ok())
            .ok_or(invalid)?;
        let revision: u64 = revision.parse().map_err(|_| invalid)?;
        let expires: u64 = expires.parse().map_err(|_| invalid)?;
        match auth.users.get(&user) {
            Some(u) if u.password_revision <= revision => {}
            _ => return Err(invalid),
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let recently = seen
            .get(&mac)
            .is_some_and(|last| now.duration_since(*last) < self.ttl);
        if unix_now() >= expires && !recently {
            seen.remove(&mac);
            return Err(invalid);
        }
        if seen.len() >= MAX_REMEMBERED && !seen.contains_key(&mac) {
            let ttl = self.ttl;
            seen.retain(|_, last| now.duration_since(*last) < ttl);
        }
        if seen.len() < MAX_REMEMBERED || seen.contains_key(&mac) {
            seen.insert(mac, now);
        }
        Ok(user)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Node {
    /// Who a request comes from: with auth off, no one in particular
    /// (`None`); with auth on, the user its token names (a token that is
    /// not valid is refused), else with `--client-cert-auth` the common
    /// name of its certificate (`cert_cn`, which the caller passes only
    /// then), else no one (whose requests the checks then refuse as
    /// etcd's "user name is empty").
    pub fn caller(&self, token: Option<&str>, cert_cn: Option<&str>) -> Result<Option<String>> {
        self.store.with_auth(|auth, _| {
            if !auth.enabled {
                return Ok(None);
            }
            match token {
                Some(token) => Ok(Some(self.tokens.verify(auth, token)?)),
                None => Ok(cert_cn.map(str::to_owned)),
            }
        })
    }

    /// Whether `caller` may read `range` now.
    pub fn check_read(&self, caller: Option<&str>, range: &KeyRange) -> Result<()> {
        self.store
            .with_auth(|auth, _| crate::store::check_read(auth, caller, range))
            .map_err(Error::from)
    }

    /// Whether `caller` may run transaction `t` now.
    pub fn check_txn(&self, caller: Option<&str>, t: &Txn) -> Result<()> {
        self.store
            .with_auth(|auth, leases| crate::store::check_txn_auth(auth, leases, caller, t))
            .map_err(Error::from)
    }

    /// Whether `caller` may administer the cluster now.
    pub fn check_admin(&self, caller: Option<&str>) -> Result<()> {
        self.store
            .with_auth(|auth, _| auth.check_admin(caller))
            .map_err(Error::from)
    }

    /// Whether `caller` is a user (with auth off, anyone is).
    pub fn check_user(&self, caller: Option<&str>) -> Result<()> {
        self.store
            .with_auth(|auth, _| auth.check_user(caller))
            .map_err(Error::from)
    }

    /// Whether `caller` may `need` every key attached to lease `id` (an
    /// admin may).
    pub fn check_lease_keys(
        &self,
        caller: Option<&str>,
        id: crate::store::LeaseId,
        need: crate::store::Need,
    ) -> Result<()> {
        self.store
            .with_auth(|auth, leases| {
                crate::store::check_lease_keys(auth, leases, caller, id, need)
            })
            .map_err(Error::from)
    }

    /// Runs `f` on the auth state as this member has applied it.
    pub fn auth_view<R>(&self, f: impl FnOnce(&AuthState) -> R) -> R {
        self.store.with_auth(|auth, _| f(auth))
    }

    /// Commits `cmd` on behalf of `caller`: refused here if the state as
    /// applied here already refuses it, and judged again when applied.
    pub async fn write_as(&self, caller: Option<&str>, cmd: Command) -> Result<Response> {
        self.store
            .with_auth(|auth, leases| crate::store::check_command(auth, leases, caller, &cmd))?;
        self.write(Command::AsUser {
            user: caller.map(str::to_owned),
            cmd: Box::new(cmd),
        })
        .await
    }

    /// Makes an auth change on behalf of `caller`; returns the store
    /// revision it was applied at.
    pub async fn change_auth(&self, caller: Option<&str>, change: AuthCommand) -> Result<Revision> {
        match self.write_as(caller, Command::Auth(change)).await? {
            Response::Applied { revision } => Ok(revision),
            Response::Rejected(r) => Err(r.into()),
            other => Err(Error::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// A fresh key to sign tokens with, for enabling auth.
    pub fn new_token_key(&self) -> Result<Vec<u8>> {
        use ring::rand::SecureRandom;
        let mut key = vec![0; crate::store::TOKEN_KEY_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| Error::Fatal("the system's random source failed".into()))?;
        Ok(key)
    }

    /// `password`'s bcrypt hash, at this member's `--bcrypt-cost`.
    pub async fn hash_password(&self, password: String) -> Result<String> {
        if password.len() > MAX_PASSWORD {
            return Err(Error::RequestTooLarge);
        }
        let cost = self.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| Error::Fatal(format!("password hashing: {e}")))?
            .map_err(|e| Error::Fatal(format!("password hashing: {e}")))
    }

    /// Checks `name`'s `password` against the state as of now (after a
    /// read barrier) and issues a token.
    pub async fn authenticate(&self, name: &str, password: String) -> Result<String> {
        self.read_barrier().await?;
        let hash = self.store.with_auth(|auth, _| {
            if !auth.enabled {
                return Err(AuthError::NotEnabled);
            }
            match auth.users.get(name) {
                None => Err(AuthError::AuthFailed),
                Some(u) => u.password.clone().ok_or(AuthError::NoPasswordUser),
            }
        })?;
        if password.len() > MAX_PASSWORD {
            return Err(AuthError::AuthFailed.into());
        }
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| Error::Fatal(format!("password check: {e}")))?
            .unwrap_or(false);
        if !matches {
            return Err(AuthError::AuthFailed.into());
        }
        // A cluster restored from a backup with auth on has no token key
        // yet (backups do not carry it): the first member asked picks one.
        if self.store.with_auth(|auth, _| auth.token_key.is_empty()) {
            let token_key = self.new_token_key()?;
            self.write(Command::Auth(AuthCommand::SetTokenKey { token_key }))
                .await?;
        }
        self.store.with_auth(|auth, _| {
            // The user may have gone, or auth been turned off, meanwhile.
            if !auth.enabled {
                return Err(AuthError::NotEnabled.into());
            }
            if !auth.users.contains_key(name) {
                return Err(AuthError::AuthFailed.into());
            }
            Ok(self.tokens.issue(auth, name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuthCommand, ROOT};

    fn enabled() -> AuthState {
        let mut auth = AuthState::default();
        for change in [
            AuthCommand::UserAdd {
                name: ROOT.into(),
                password: Some("h".into()),
            },
            AuthCommand::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            AuthCommand::UserAdd {
                name: "u.v".into(),
                password: Some("h".into()),
            },
            AuthCommand::Enable {
                token_key: vec![9; 32],
            },
        ] {
            auth.apply(change).unwrap();
        }
        auth
    }

    #[test]
    fn tokens_name_their_user_until_voided() {
        let tokens = Tokens::new(Duration::from_secs(300));
        let mut auth = enabled();
        let t = tokens.issue(&auth, "u.v");
        assert_eq!(tokens.verify(&auth, &t), Ok("u.v".to_string()));
        // Tampered with, anywhere.
        let forged = t.replacen(
            &URL_SAFE_NO_PAD.encode("u.v"),
            &URL_SAFE_NO_PAD.encode(ROOT),
            1,
        );
        assert_eq!(tokens.verify(&auth, &forged), Err(AuthError::InvalidToken));
        assert_eq!(
            tokens.verify(&auth, "garbage"),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            tokens.verify(&auth, &"a.".repeat(5000)),
            Err(AuthError::InvalidToken)
        );
        // Another cluster's key (or a re-enable) voids it.
        let mut other = auth.clone();
        other.token_key = vec![8; 32];
        assert_eq!(tokens.verify(&other, &t), Err(AuthError::InvalidToken));
        // A password change voids tokens issued before it.
        auth.apply(AuthCommand::UserChangePassword {
            name: "u.v".into(),
            password: Some("h2".into()),
        })
        .unwrap();
        assert_eq!(tokens.verify(&auth, &t), Err(AuthError::InvalidToken));
        let t2 = tokens.issue(&auth, "u.v");
        assert_eq!(tokens.verify(&auth, &t2), Ok("u.v".to_string()));
        auth.apply(AuthCommand::UserDelete { name: "u.v".into() })
            .unwrap();
        assert_eq!(tokens.verify(&auth, &t2), Err(AuthError::InvalidToken));
    }

    #[test]
    fn an_expired_token_lives_on_while_used_here() {
        let tokens = Tokens::new(Duration::from_secs(300));
        let auth = enabled();
        // Issued long ago: expired on its face.
        let old = Tokens::new(Duration::ZERO).issue(&auth, ROOT);
        assert_eq!(tokens.verify(&auth, &old), Err(AuthError::InvalidToken));
        let fresh = tokens.issue(&auth, ROOT);
        assert!(tokens.verify(&auth, &fresh).is_ok());
        // Remembered as used: still fine (the TTL counts from last use).
        assert!(tokens.verify(&auth, &fresh).is_ok());
    }
}
