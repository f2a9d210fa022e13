//! The document the all-in-one `crier` serves at `/openapi.json`: the routes of
//! both services (each one's `ApiDoc`) and the health routes.

use utoipa::OpenApi;

/// The `/readyz` of the all-in-one, which covers both services.
#[derive(OpenApi)]
#[openapi(paths(crate::startup::readyz))]
pub struct Readyz;

/// The document of the all-in-one.
pub fn document() -> utoipa::openapi::OpenApi {
    server::openapi::document([
        chat_service::startup::ApiDoc::openapi(),
        broadcast_sse::startup::ApiDoc::openapi(),
        Readyz::openapi(),
    ])
}
