//! A secret string (a client secret, an upstream access token) whose `Debug`
//! prints `[redacted]`, so a `{:?}` of a struct that holds one, in a log line
//! or a panic message, does not leak it: the same type the gateway's policy
//! uses for its vault client secret.

pub use agentward_core::secret::Secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }
}
