//! What both clients' TLS (rustls, never OpenSSL) needs from us: one crypto
//! provider for the process, and telling a TLS failure (an untrusted
//! certificate, a server without TLS) from an outage, since waiting cures only
//! the second.

/// Installs ring as rustls's provider for the process, whatever other provider
/// a dependency may compile in: with two and none chosen, redis-rs's
/// `ClientConfig::builder()` would panic on the first handshake. (sqlx names
/// its provider itself.) An error means one is installed already, which is as good.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether rustls is somewhere in `err`'s causes. Two wrappers hide what they
/// wrap from `source()`: an `io::Error` (its `source()` is the wrapped error's
/// source) and the `Arc` redis-rs keeps an I/O error in (the `Arc` is the source).
pub fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<rustls::Error>() {
            return true;
        }
        let wrapped: Option<&(dyn std::error::Error + 'static)> =
            match (err.downcast_ref::<std::io::Error>(), err.downcast_ref::<Shared>()) {
                (Some(io), _) => io.get_ref().map(|inner| inner as _),
                (_, Some(shared)) => Some(&**shared),
                _ => None,
            };
        if wrapped.is_some_and(is_tls_failure) {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_inside_an_io_error_is_a_tls_failure() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_tls_failure(&redis::RedisError::from(io)));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_tls_failure(&redis::RedisError::from(refused)));
    }
}
