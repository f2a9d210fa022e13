//! The URLs of the app behind Crier (the publish hook, webhooks): checked
//! alike, and shown in logs without what may be a secret.

/// An `http://` or `https://` URL with a host; `example` shows one in the
/// error.
pub fn parse(raw: &str, example: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| format!("{raw:?} is not a URL like {example}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!(
            "{raw:?} is not an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

/// The URL without what may be a secret (user, password, query), for logs.
pub fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}
