//! The web app's pages: a browser asking for a page URL (see [`crate::pages`]) gets the shell
//! page from the static files, with the security headers, as a 404 when the page's channel is
//! missing or the caller may not read it. The shell's script renders the page from the URL.

use worker::{Headers, Method, Response};

use super::auth::Hiding;
use super::context::RequestContext;
use super::error::{internal, ApiResult, ErrorCode};
use crate::access::Action;
use crate::pages::{page_of, wants_html, Page, SHELL_HEADERS, SHELL_PATH};

/// The page a request asks for: a GET of a page URL, wanting HTML, without a key in the path
/// (a conda URL opened in a browser stays what it is).
pub fn requested<'p>(
    ctx: &RequestContext,
    method: &Method,
    path: &'p str,
) -> ApiResult<Option<Page<'p>>> {
    if *method != Method::Get || ctx.has_path_token() {
        return Ok(None);
    }
    Ok(wants_html(ctx.header("Accept"))
        .then(|| page_of(path))
        .flatten())
}

pub async fn shell(ctx: &RequestContext, page: Page<'_>) -> ApiResult<Response> {
    let status = match page {
        Page::Site => 200,
        Page::Channel(channel) => {
            match ctx.authorize(channel, Action::Read, Hiding::NotFound).await {
                Ok(_) => 200,
                // A bad key too: the page then offers to sign in, like for a private channel.
                Err(error) if matches!(error.code, ErrorCode::NotFound | ErrorCode::InvalidKey) => {
                    404
                }
                Err(error) => return Err(error),
            }
        }
    };
    let url = ctx.req().url()?.join(SHELL_PATH).map_err(internal)?;
    let mut asset = ctx.assets()?.fetch(url.to_string(), None).await?;
    if asset.status_code() != 200 {
        return Err(internal(format!(
            "the shell page {SHELL_PATH} answered {}",
            asset.status_code()
        )));
    }
    let body = asset.bytes().await?;
    let headers = Headers::new();
    for (name, value) in SHELL_HEADERS {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(body)?
        .with_status(status)
        .with_headers(headers))
}
