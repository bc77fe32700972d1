//! `kvctl auth`, `kvctl user` and `kvctl role`: etcd's authentication and
//! role-based access, printed as etcdctl prints them; and the password
//! prompts of `--user` and `user add|passwd`.

use std::io::{BufRead, IsTerminal};

use base64::Engine;
use serde_json::{json, Value};

use super::args::{AuthCommand, Format, PermRange, RoleCommand, UserCommand};
use super::output::header_json;
use crate::client::{Client, ClientError};
use crate::pb;
use crate::pb::authpb::permission::Type as PermType;

/// A password for `whom`: asked on the terminal without echo (twice when
/// `confirm`), or read as one line from stdin when it is not a terminal.
pub fn read_password(whom: &str, confirm: bool) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let password = rpassword::prompt_password(format!("Password of {whom}: "))?;
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    if confirm {
        let again = rpassword::prompt_password(format!(
            "Type password of {whom} again for confirmation: "
        ))?;
        if again != password {
            anyhow::bail!("given passwords are different");
        }
    }
    Ok(password)
}

/// `NAME[:PASSWORD]`: the name, and the password if given.
pub fn split_user(spec: &str) -> (String, Option<String>) {
    match spec.split_once(':') {
        Some((name, password)) => (name.to_string(), Some(password.to_string())),
        None => (spec.to_string(), None),
    }
}

fn simple_or_json(format: Format, simple: String, json: Value) -> String {
    if format == Format::Json {
        json.to_string() + "\n"
    } else {
        simple
    }
}

pub async fn auth(
    client: &mut Client,
    cmd: &AuthCommand,
    format: Format,
) -> Result<String, ClientError> {
    Ok(match cmd {
        AuthCommand::Enable => {
            let resp = client
                .auth(|mut a| async move {
                    Ok(a.auth_enable(pb::AuthEnableRequest {}).await?.into_inner())
                })
                .await?;
            simple_or_json(
                format,
                "Authentication Enabled\n".into(),
                json!({"header": header_json(&resp.header)}),
            )
        }
        AuthCommand::Disable => {
            let resp = client
                .auth(|mut a| async move {
                    Ok(a.auth_disable(pb::AuthDisableRequest {})
                        .await?
                        .into_inner())
                })
                .await?;
            simple_or_json(
                format,
                "Authentication Disabled\n".into(),
                json!({"header": header_json(&resp.header)}),
            )
        }
        AuthCommand::Status => {
            let resp = client
                .auth(|mut a| async move {
                    Ok(a.auth_status(pb::AuthStatusRequest {}).await?.into_inner())
                })
                .await?;
            simple_or_json(
                format,
                format!(
                    "Authentication Status: {}\nAuthRevision: {}\n",
                    resp.enabled, resp.auth_revision
                ),
                json!({
                    "header": header_json(&resp.header),
                    "enabled": resp.enabled,
                    "authRevision": resp.auth_revision,
                }),
            )
        }
    })
}

pub async fn user(
    client: &mut Client,
    cmd: &UserCommand,
    format: Format,
) -> Result<String, anyhow::Error> {
    let done = |simple: String, header: &Option<pb::ResponseHeader>| {
        simple_or_json(format, simple, json!({"header": header_json(header)}))
    };
    Ok(match cmd {
        UserCommand::Add {
            name_password,
            no_password,
        } => {
            let (name, password) = split_user(name_password);
            let password = match (password, no_password) {
                (_, true) => String::new(),
                (Some(p), false) => p,
                (None, false) => read_password(&name, true)?,
            };
            let req = pb::AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(pb::authpb::UserAddOptions {
                    no_password: *no_password,
                }),
                hashed_password: String::new(),
            };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.user_add(req).await?.into_inner()) }
                })
                .await?;
            done(format!("User {name} created\n"), &resp.header)
        }
        UserCommand::Get { name, detail } => {
            let req = pb::AuthUserGetRequest { name: name.clone() };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.user_get(req).await?.into_inner()) }
                })
                .await?;
            if format == Format::Json {
                return Ok(
                    json!({"header": header_json(&resp.header), "roles": resp.roles}).to_string()
                        + "\n",
                );
            }
            let mut out = format!("User: {name}\n");
            if *detail {
                out.push('\n');
                for role in &resp.roles {
                    let perms = role_get(client, role).await?;
                    out.push_str(&role_text(role, &perms.perm));
                }
            } else {
                out.push_str(&format!("Roles: {}\n", resp.roles.join(" ")));
            }
            out
        }
        UserCommand::List => {
            let resp = client
                .auth(|mut a| async move {
                    Ok(a.user_list(pb::AuthUserListRequest {}).await?.into_inner())
                })
                .await?;
            simple_or_json(
                format,
                resp.users.iter().map(|u| format!("{u}\n")).collect(),
                json!({"header": header_json(&resp.header), "users": resp.users}),
            )
        }
        UserCommand::Delete { name } => {
            let req = pb::AuthUserDeleteRequest { name: name.clone() };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.user_delete(req).await?.into_inner()) }
                })
                .await?;
            done(format!("User {name} deleted\n"), &resp.header)
        }
        UserCommand::Passwd { name } => {
            let password = read_password(name, true)?;
            let req = pb::AuthUserChangePasswordRequest {
                name: name.clone(),
                password,
                hashed_password: String::new(),
            };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.user_change_password(req).await?.into_inner()) }
                })
                .await?;
            done("Password updated\n".into(), &resp.header)
        }
        UserCommand::GrantRole { name, role } => {
            let req = pb::AuthUserGrantRoleRequest {
                user: name.clone(),
                role: role.clone(),
            };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.user_grant_role(req).await?.into_inner()) }
                })
                .await?;
            done(
                format!("Role {role} is granted to user {name}\n"),
                &resp.header,
            )
        }
        UserCommand::RevokeRole { name, role } => {
            let req = pb::AuthUserRevokeRoleRequest {
                name: name.clone(),
                role: role.clone(),
            };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.user_revoke_role(req).await?.into_inner()) }
                })
                .await?;
            done(
                format!("Role {role} is revoked from user {name}\n"),
                &resp.header,
            )
        }
    })
}

async fn role_get(client: &mut Client, role: &str) -> Result<pb::AuthRoleGetResponse, ClientError> {
    let req = pb::AuthRoleGetRequest {
        role: role.to_string(),
    };
    client
        .auth(|mut a| {
            let req = req.clone();
            async move { Ok(a.role_get(req).await?.into_inner()) }
        })
        .await
}

/// The end of `key`'s prefix range (etcd's `GetPrefixRangeEnd`).
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One permission's range as etcdctl prints it.
fn range_text(key: &[u8], range_end: &[u8]) -> String {
    let key_s = String::from_utf8_lossy(key);
    if range_end.is_empty() {
        return key_s.into_owned();
    }
    if range_end == [0] {
        return format!("[{key_s}, <open ended>");
    }
    let mut out = format!("[{key_s}, {})", String::from_utf8_lossy(range_end));
    if prefix_end(key) == range_end {
        out.push_str(&format!(" (prefix {key_s})"));
    }
    out
}

/// `role get`'s text: the role, then its read and its write permissions.
fn role_text(role: &str, perms: &[pb::authpb::Permission]) -> String {
    let mut out = format!("Role {role}\nKV Read:\n");
    let kind =
        |p: &pb::authpb::Permission| PermType::try_from(p.perm_type).unwrap_or(PermType::Read);
    for p in perms.iter().filter(|p| kind(p) != PermType::Write) {
        out.push_str(&format!("\t{}\n", range_text(&p.key, &p.range_end)));
    }
    out.push_str("KV Write:\n");
    for p in perms.iter().filter(|p| kind(p) != PermType::Read) {
        out.push_str(&format!("\t{}\n", range_text(&p.key, &p.range_end)));
    }
    out
}

/// `(key, range_end)` from a command's key, end and flags, as etcdctl
/// makes them.
fn perm_range(r: &PermRange) -> Result<(Vec<u8>, Vec<u8>), anyhow::Error> {
    if r.prefix && r.from_key {
        anyhow::bail!("--from-key and --prefix flags are mutually exclusive");
    }
    if r.range_end.is_some() && r.prefix {
        anyhow::bail!("unexpected endkey argument with --prefix flag");
    }
    if r.range_end.is_some() && r.from_key {
        anyhow::bail!("unexpected endkey argument with --from-key flag");
    }
    let key = r.key.as_bytes().to_vec();
    if key.is_empty() {
        let end = if r.prefix || r.from_key {
            vec![0]
        } else {
            vec![]
        };
        return Ok((vec![0], end));
    }
    let end = if r.prefix {
        prefix_end(&key)
    } else if r.from_key {
        vec![0]
    } else {
        r.range_end.as_deref().unwrap_or("").as_bytes().to_vec()
    };
    Ok((key, end))
}

pub async fn role(
    client: &mut Client,
    cmd: &RoleCommand,
    format: Format,
) -> Result<String, anyhow::Error> {
    let done = |simple: String, header: &Option<pb::ResponseHeader>| {
        simple_or_json(format, simple, json!({"header": header_json(header)}))
    };
    Ok(match cmd {
        RoleCommand::Add { name } => {
            let req = pb::AuthRoleAddRequest { name: name.clone() };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.role_add(req).await?.into_inner()) }
                })
                .await?;
            done(format!("Role {name} created\n"), &resp.header)
        }
        RoleCommand::Get { name } => {
            let resp = role_get(client, name).await?;
            if format == Format::Json {
                let perm: Vec<Value> = resp
                    .perm
                    .iter()
                    .map(|p| {
                        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
                        json!({
                            "permType": p.perm_type,
                            "key": b64(&p.key),
                            "range_end": b64(&p.range_end),
                        })
                    })
                    .collect();
                json!({"header": header_json(&resp.header), "perm": perm}).to_string() + "\n"
            } else {
                role_text(name, &resp.perm)
            }
        }
        RoleCommand::List => {
            let resp = client
                .auth(|mut a| async move {
                    Ok(a.role_list(pb::AuthRoleListRequest {}).await?.into_inner())
                })
                .await?;
            simple_or_json(
                format,
                resp.roles.iter().map(|r| format!("{r}\n")).collect(),
                json!({"header": header_json(&resp.header), "roles": resp.roles}),
            )
        }
        RoleCommand::Delete { name } => {
            let req = pb::AuthRoleDeleteRequest { role: name.clone() };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.role_delete(req).await?.into_inner()) }
                })
                .await?;
            done(format!("Role {name} deleted\n"), &resp.header)
        }
        RoleCommand::GrantPermission {
            name,
            perm_type,
            range,
        } => {
            let perm_type = match perm_type.to_ascii_lowercase().as_str() {
                "read" => PermType::Read,
                "write" => PermType::Write,
                "readwrite" => PermType::Readwrite,
                other => anyhow::bail!("invalid permission type: {other}"),
            };
            let (key, range_end) = perm_range(range)?;
            let req = pb::AuthRoleGrantPermissionRequest {
                name: name.clone(),
                perm: Some(pb::authpb::Permission {
                    perm_type: perm_type as i32,
                    key,
                    range_end,
                }),
            };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.role_grant_permission(req).await?.into_inner()) }
                })
                .await?;
            done(format!("Role {name} updated\n"), &resp.header)
        }
        RoleCommand::RevokePermission { name, range } => {
            let (key, range_end) = perm_range(range)?;
            let what = if range_end.is_empty() {
                format!("key {}", String::from_utf8_lossy(&key))
            } else if range_end == [0] {
                format!("range [{}, <open ended>", String::from_utf8_lossy(&key))
            } else {
                format!(
                    "range [{}, {})",
                    String::from_utf8_lossy(&key),
                    String::from_utf8_lossy(&range_end)
                )
            };
            let req = pb::AuthRoleRevokePermissionRequest {
                role: name.clone(),
                key,
                range_end,
            };
            let resp = client
                .auth(|mut a| {
                    let req = req.clone();
                    async move { Ok(a.role_revoke_permission(req).await?.into_inner()) }
                })
                .await?;
            done(
                format!("Permission of {what} is revoked from role {name}\n"),
                &resp.header,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_print_as_etcdctl_prints_them() {
        assert_eq!(range_text(b"a", b""), "a");
        assert_eq!(range_text(b"b", b"c"), "[b, c) (prefix b)");
        assert_eq!(range_text(b"b", b"d"), "[b, d)");
        assert_eq!(range_text(b"y", b"\0"), "[y, <open ended>");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(
            split_user("root:pw:x"),
            ("root".into(), Some("pw:x".into()))
        );
        assert_eq!(split_user("root"), ("root".into(), None));
    }
}
