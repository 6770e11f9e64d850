//! A Redis server named by a `redis://[user:password@]host:port[/db]` URL. Pure parsing.

/// Where a Redis server is and how to log in. The password never appears in `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    /// ACL user (Redis 6+); `None` is the `default` user.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The database in the URL's path, if any.
    pub database: Option<u32>,
}

/// The URL could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a Redis URL: {reason}; use redis://[user:password@]host:port[/db]")]
pub struct RedisUrlError {
    shown: String,
    reason: String,
}

impl RedisTarget {
    pub fn parse(input: &str) -> Result<Self, RedisUrlError> {
        let error = |reason: &str| RedisUrlError {
            shown: crate::text::redact_url(input),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(input).map_err(|e| error(&e.to_string()))?;
        match url.scheme() {
            "redis" => {}
            "rediss" => return Err(error("TLS (rediss://) is not supported yet")),
            other => return Err(error(&format!("the scheme is {other:?}, not \"redis\""))),
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| error("the host is missing"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |s: &str| {
            percent_decode(s)
                .map_err(|_| error("the user or password is not valid percent-encoded UTF-8"))
        };
        let username = match url.username() {
            "" => None,
            user => Some(decode(user)?),
        };
        let password = url.password().map(decode).transpose()?;
        let path = url.path().trim_matches('/');
        let database = if path.is_empty() {
            None
        } else {
            Some(
                path.parse::<u32>()
                    .map_err(|_| error(&format!("the database {path:?} is not a number")))?,
            )
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(6379),
            username,
            password,
            database,
        })
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connection settings for the `redis` crate, logged into `db`.
    pub fn connection_info(&self, db: u32) -> redis::RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let mut settings = redis::RedisConnectionInfo::default().set_db(i64::from(db));
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        Ok(redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
            .into_connection_info()?
            .set_redis_settings(settings))
    }
}

impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.address())?;
        if let Some(db) = self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part() {
        let t = RedisTarget::parse("redis://backup:p%40ss%3Aw0rd@redis.shop.svc:6380/3").unwrap();
        assert_eq!(t.host, "redis.shop.svc");
        assert_eq!(t.port, 6380);
        assert_eq!(t.username.as_deref(), Some("backup"));
        assert_eq!(t.password.as_deref(), Some("p@ss:w0rd"));
        assert_eq!(t.database, Some(3));
        assert_eq!(t.to_string(), "redis://backup@redis.shop.svc:6380/3");
        assert!(!format!("{t:?}").contains("w0rd"));

        let t = RedisTarget::parse("redis://:secret@127.0.0.1").unwrap();
        assert_eq!(
            (t.username, t.password.as_deref(), t.port, t.database),
            (None, Some("secret"), 6379, None)
        );
    }

    #[test]
    fn refuses_what_it_cannot_use_without_leaking_the_password() {
        for (url, fragment) in [
            ("redis://:pw@host/abc", "database \"abc\" is not a number"),
            ("rediss://:pw@host:6380", "TLS"),
            ("http://:pw@host", "scheme"),
            ("redis://:pw@:6379", "host"),
            ("not a url", "relative URL"),
        ] {
            let err = RedisTarget::parse(url).unwrap_err().to_string();
            assert!(err.contains(fragment), "{url}: {err}");
            assert!(err.contains("use redis://"), "{err}");
            assert!(!err.contains(":pw@"), "password leaked: {err}");
        }
    }
}
