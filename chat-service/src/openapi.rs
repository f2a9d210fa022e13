//! The document chat-service serves at `/openapi.json`: its routes (the
//! `ApiDoc` of [`crate::startup`]'s route table) and the health routes.

use utoipa::OpenApi;

/// The `/readyz` this service answers.
#[derive(OpenApi)]
#[openapi(paths(crate::routes::health::readyz))]
pub struct Readyz;

/// The document of the standalone chat-service.
pub fn document() -> utoipa::openapi::OpenApi {
    server::openapi::document([crate::startup::ApiDoc::openapi(), Readyz::openapi()])
}
