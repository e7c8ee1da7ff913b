//! Bearer tokens with scopes, checked on every call before it reaches a
//! service (a tower layer on the server, so the check sees the method).
//!
//! | method                                   | scope needed        |
//! |------------------------------------------|---------------------|
//! | `crossfold.v1.Workers/*`, `Data/*`       | `worker`            |
//! | `crossfold.v1.Experiments/Submit, Cancel`| `submit`            |
//! | other `crossfold.v1.Experiments/*`       | `read` (or `submit`)|
//! | `grpc.health.v1.*`, `grpc.reflection.*`  | none (probes)       |
//!
//! A missing or unknown token is UNAUTHENTICATED; a known token without the
//! scope is PERMISSION_DENIED. Tokens come from a file of `<scope> <token>`
//! lines; presented tokens are compared with every known one in constant
//! time (SHA-256 digests compared with `subtle`, no early exit).

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Register, lease, heartbeat, report results, fetch data files.
    Worker,
    /// Submit and cancel experiments (and read them).
    Submit,
    /// Read experiments: status, watch, results.
    Read,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "worker" => Some(Scope::Worker),
            "submit" => Some(Scope::Submit),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Worker => "worker",
            Scope::Submit => "submit",
            Scope::Read => "read",
        }
    }
}

/// Shortest token accepted in a tokens file.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every bad line, each as `path:line: reason`.
    #[error("{}", lines.iter().map(|(n, reason)| format!("{}:{n}: {reason}", path.display())).collect::<Vec<_>>().join("\n"))]
    Lines {
        path: PathBuf,
        lines: Vec<(usize, String)>,
    },
    #[error("{path}: no tokens (lines of `<scope> <token>`, scope worker, submit or read)")]
    Empty { path: PathBuf },
}

/// The known tokens: digest and scope of each.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Scope)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// Parse `<scope> <token>` lines; `#` starts a comment. Every problem
    /// names the file and line (never the token).
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            // `#` starts a comment at the start of a line or after white
            // space, so a token may contain `#`.
            let line = match raw.trim_start().strip_prefix('#') {
                Some(_) => "",
                None => raw
                    .find(" #")
                    .or_else(|| raw.find("\t#"))
                    .map_or(raw, |i| &raw[..i])
                    .trim(),
            };
            if line.is_empty() {
                continue;
            }
            let mut bad = |reason: String| problems.push((i + 1, reason));
            let mut parts = line.split_whitespace();
            let (Some(scope), Some(token), None) = (parts.next(), parts.next(), parts.next())
            else {
                bad("expected `<scope> <token>`".into());
                continue;
            };
            let known = Scope::parse(scope);
            if known.is_none() {
                // Never echo what may be a token (columns swapped).
                let shown = if scope.len() <= 8 {
                    format!("{scope:?}")
                } else {
                    "(not shown)".to_string()
                };
                bad(format!(
                    "unknown scope {shown}: expected `<scope> <token>` with scope worker, submit or read"
                ));
            }
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                bad(format!(
                    "the token must be at least {MIN_TOKEN_LEN} visible ASCII characters \
                     (e.g. `openssl rand -hex 32`)"
                ));
            }
            if let Some(scope) = known {
                entries.push((digest(token.as_bytes()), scope));
            }
        }
        if !problems.is_empty() {
            return Err(TokensError::Lines {
                path: path.to_path_buf(),
                lines: problems,
            });
        }
        if entries.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens { entries })
    }

    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse(path, &text)
    }

    /// The scopes of `token` (empty when unknown). Every entry is compared,
    /// in constant time, whatever matches.
    pub fn scopes(&self, token: &[u8]) -> BTreeSet<Scope> {
        let d = digest(token);
        let mut out = BTreeSet::new();
        for (known, scope) in &self.entries {
            if bool::from(known.ct_eq(&d)) {
                out.insert(*scope);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Which scopes allow the gRPC method at `path` (`/package.Service/Method`);
/// `None` for methods open to everyone (health, reflection).
pub fn required(path: &str) -> Option<&'static [Scope]> {
    let mut it = path.trim_start_matches('/').splitn(2, '/');
    let service = it.next().unwrap_or("");
    let method = it.next().unwrap_or("");
    match service {
        "crossfold.v1.Workers" | "crossfold.v1.Data" => Some(&[Scope::Worker]),
        "crossfold.v1.Experiments" => match method {
            "Submit" | "Cancel" => Some(&[Scope::Submit]),
            _ => Some(&[Scope::Read, Scope::Submit]),
        },
        s if s.starts_with("grpc.health.") || s.starts_with("grpc.reflection.") => None,
        // Anything else is unknown to the server (UNIMPLEMENTED), but only
        // after authentication: no probing without a token.
        _ => Some(&[]),
    }
}

/// The outcome of checking one call.
pub fn check(
    tokens: &Tokens,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<(), tonic::Status> {
    let Some(allowed) = required(path) else {
        return Ok(());
    };
    let Some(header) = authorization else {
        return Err(tonic::Status::unauthenticated(
            "no bearer token: send `authorization: Bearer <token>` (crossfold: --token-file or CROSSFOLD_TOKEN)",
        ));
    };
    let token = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
        .ok_or_else(|| {
            tonic::Status::unauthenticated("the authorization header is not `Bearer <token>`")
        })?;
    let scopes = tokens.scopes(token);
    if scopes.is_empty() {
        return Err(tonic::Status::unauthenticated("unknown token"));
    }
    if allowed.iter().any(|s| scopes.contains(s)) {
        Ok(())
    } else {
        let have: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
        let need: Vec<&str> = allowed.iter().map(|s| s.name()).collect();
        Err(tonic::Status::permission_denied(format!(
            "{path} needs a token with scope {}; this token has {}",
            if need.is_empty() {
                "(none: unknown method)".to_string()
            } else {
                need.join(" or ")
            },
            have.join(", ")
        )))
    }
}

/// Tower layer that checks every call against [`Tokens`]; without tokens
/// (`None`) every call passes.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<Tokens>>,
}

impl AuthLayer {
    pub fn new(tokens: Option<Arc<Tokens>>) -> Self {
        AuthLayer { tokens }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let verdict = match &self.tokens {
            None => Ok(()),
            Some(tokens) => check(
                tokens,
                req.uri().path(),
                req.headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            ),
        };
        match verdict {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                tracing::warn!(method = %req.uri().path(), code = ?status.code(), "call refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# scopes\nworker  0123456789abcdef-worker\nsubmit 0123456789abcdef-submit # lab\nread 0123456789abcdef-read\n";

    fn tokens() -> Tokens {
        Tokens::parse(Path::new("tokens"), FILE).unwrap()
    }

    fn code(path: &str, header: Option<&str>) -> tonic::Code {
        match check(&tokens(), path, header.map(str::as_bytes)) {
            Ok(()) => tonic::Code::Ok,
            Err(s) => s.code(),
        }
    }

    #[test]
    fn scopes_decide_per_method() {
        use tonic::Code::*;
        let w = Some("Bearer 0123456789abcdef-worker");
        let s = Some("Bearer 0123456789abcdef-submit");
        let r = Some("Bearer 0123456789abcdef-read");
        assert_eq!(code("/crossfold.v1.Workers/Lease", w), Ok);
        assert_eq!(code("/crossfold.v1.Data/FetchFile", w), Ok);
        assert_eq!(code("/crossfold.v1.Workers/Lease", r), PermissionDenied);
        assert_eq!(code("/crossfold.v1.Workers/Lease", s), PermissionDenied);
        assert_eq!(code("/crossfold.v1.Experiments/Submit", s), Ok);
        assert_eq!(
            code("/crossfold.v1.Experiments/Cancel", r),
            PermissionDenied
        );
        assert_eq!(
            code("/crossfold.v1.Experiments/Submit", w),
            PermissionDenied
        );
        assert_eq!(code("/crossfold.v1.Experiments/Get", r), Ok);
        assert_eq!(code("/crossfold.v1.Experiments/Watch", s), Ok);
        assert_eq!(
            code("/crossfold.v1.Experiments/Results", w),
            PermissionDenied
        );
        assert_eq!(
            code("/crossfold.v1.Experiments/ResultsStream", w),
            PermissionDenied
        );
        assert_eq!(code("/crossfold.v1.Experiments/ResultsStream", r), Ok);
        assert_eq!(code("/crossfold.v1.Experiments/Get", None), Unauthenticated);
        assert_eq!(
            code(
                "/crossfold.v1.Experiments/Get",
                Some("Bearer nope-nope-nope-nope")
            ),
            Unauthenticated
        );
        assert_eq!(
            code(
                "/crossfold.v1.Experiments/Get",
                Some("0123456789abcdef-read")
            ),
            Unauthenticated
        );
        assert_eq!(code("/grpc.health.v1.Health/Check", None), Ok);
        assert_eq!(
            code(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            ),
            Ok
        );
        assert_eq!(code("/other.Service/Method", None), Unauthenticated);
        assert_eq!(code("/other.Service/Method", s), PermissionDenied);
    }

    #[test]
    fn comments_and_swapped_columns() {
        let t = Tokens::parse(
            Path::new("t"),
            "  # comment\nread abc#def0123456789 # lab\n",
        )
        .unwrap();
        assert_eq!(t.scopes(b"abc#def0123456789").len(), 1);
        let e = Tokens::parse(Path::new("t"), "0123456789abcdef-secret worker\n")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("secret") && e.contains("t:1"), "{e}");
    }

    #[test]
    fn a_token_can_hold_several_scopes() {
        let t = Tokens::parse(
            Path::new("t"),
            "read 0123456789abcdef\nworker 0123456789abcdef\n",
        )
        .unwrap();
        let scopes = t.scopes(b"0123456789abcdef");
        assert_eq!(
            scopes.into_iter().collect::<Vec<_>>(),
            vec![Scope::Worker, Scope::Read]
        );
        assert!(t.scopes(b"0123456789abcdeF").is_empty());
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_token() {
        let p = Path::new("/etc/crossfold/tokens");
        let e = Tokens::parse(p, "worker 0123456789abcdef\nadmin 0123456789abcdef-x\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/etc/crossfold/tokens:2") && e.contains("admin"),
            "{e}"
        );
        assert!(!e.contains("0123456789abcdef-x"), "{e}");
        let e = Tokens::parse(p, "worker short\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(":1") && e.contains("16") && !e.contains("short\""),
            "{e}"
        );
        let e = Tokens::parse(p, "worker\n").err().unwrap().to_string();
        assert!(e.contains("<scope> <token>"), "{e}");
        // Every bad line at once, in order, good lines between them.
        let e = Tokens::parse(
            p,
            "worker short\nread 0123456789abcdef\nadmin 0123456789abcdef\nsubmit\n",
        )
        .err()
        .unwrap()
        .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with("/etc/crossfold/tokens:1: the token"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("/etc/crossfold/tokens:3: unknown scope"),
            "{e}"
        );
        assert!(
            lines[2].starts_with("/etc/crossfold/tokens:4: expected"),
            "{e}"
        );
        let e = Tokens::parse(p, "# nothing\n\n").err().unwrap().to_string();
        assert!(e.contains("no tokens"), "{e}");
        let e = Tokens::load(Path::new("/nonexistent/tokens"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/tokens"), "{e}");
    }
}
