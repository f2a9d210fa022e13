//! A service's routes, declared once: [`routes!`](crate::routes!) writes the
//! `configure` that registers them, the `ROUTES` list, and the `ApiDoc` that
//! describes them from each handler's `#[utoipa::path]`. A route cannot be
//! served without being listed, nor listed without being served; a handler
//! without a description does not compile, and one whose description names
//! another path or method fails the test the macro writes next to them.

/// Declares the routes of a service:
///
/// ```ignore
/// server::routes! {
///     "/bans" => { GET => admin::list_bans, POST => admin::add_bans },
/// }
/// ```
///
/// makes `pub fn configure(&mut ServiceConfig)`, where each resource answers
/// the methods named and every other method `405` with an `Allow` header
/// naming them (in the order written); `pub const ROUTES: &[(&str, &str)]`,
/// every `(METHOD, path)` that `configure` serves; `pub struct ApiDoc`, the
/// `utoipa::OpenApi` of every handler (each needs `#[utoipa::path]`, and the
/// crate a `utoipa` dependency); and a test that `ApiDoc` describes exactly
/// `ROUTES`.
#[macro_export]
macro_rules! routes {
    ($( $path:literal => { $( $method:ident => $handler:path ),+ $(,)? } ),+ $(,)?) => {
        /// Every `(METHOD, path)` [`configure`] serves; the OpenAPI document must
        /// describe exactly these (a test compares them).
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path) ),+ ),+ ];

        /// The description of every handler [`configure`] serves, each from its
        /// `#[utoipa::path]`; `server::openapi::document` completes it.
        #[derive(::utoipa::OpenApi)]
        #[openapi(paths($( $( $handler ),+ ),+))]
        pub struct ApiDoc;

        #[cfg(test)]
        #[test]
        fn the_api_doc_describes_exactly_the_routes() {
            let document = <ApiDoc as ::utoipa::OpenApi>::openapi();
            assert_eq!(
                $crate::openapi::operations(&document),
                $crate::openapi::sorted(ROUTES),
                "each handler's #[utoipa::path] must name the path and method it is routed at"
            );
            let document = $crate::openapi::document([document]);
            assert_eq!(
                $crate::openapi::dangling_refs(&document),
                ::std::vec::Vec::<::std::string::String>::new(),
                "every schema and response the handlers name must be in the document"
            );
        }

        /// The API routes (the table of contents of the service), from the
        /// same declaration as [`ROUTES`]. The caller registers the state the
        /// handlers take.
        pub fn configure(cfg: &mut ::actix_web::web::ServiceConfig) {
            $(
                cfg.service(
                    ::actix_web::web::resource($path)
                        $( .route(::actix_web::web::method(::actix_web::http::Method::$method).to($handler)) )+
                        .default_service($crate::error::method_not_allowed(
                            $crate::routes!(@allow $($method),+)
                        )),
                );
            )+
        }
    };
    (@allow $first:ident $(, $rest:ident)*) => {
        concat!(stringify!($first) $(, ", ", stringify!($rest))*)
    };
}

#[cfg(test)]
mod tests {
    use actix_web::App;
    use actix_web::test::{TestRequest, call_service, init_service};

    mod handlers {
        use actix_web::HttpResponse;

        #[utoipa::path(get, path = "/things", responses((status = 200)))]
        pub async fn list() -> HttpResponse {
            HttpResponse::Ok().finish()
        }

        #[utoipa::path(post, path = "/things", responses((status = 200)))]
        pub async fn add() -> HttpResponse {
            HttpResponse::Ok().finish()
        }

        #[utoipa::path(delete, path = "/things/{id}", responses((status = 200)))]
        pub async fn remove() -> HttpResponse {
            HttpResponse::Ok().finish()
        }
    }

    mod service {
        use super::handlers;

        crate::routes! {
            "/things" => { GET => handlers::list, POST => handlers::add },
            "/things/{id}" => { DELETE => handlers::remove },
        }
    }

    #[test]
    fn routes_lists_every_method_of_every_path() {
        assert_eq!(
            service::ROUTES,
            [
                ("GET", "/things"),
                ("POST", "/things"),
                ("DELETE", "/things/{id}")
            ]
        );
    }

    #[actix_web::test]
    async fn configure_serves_the_methods_and_answers_others_405_with_allow() {
        let app = init_service(App::new().configure(service::configure)).await;
        for (method, path) in service::ROUTES {
            let request = TestRequest::default()
                .method(method.parse().expect("method"))
                .uri(&path.replace("{id}", "1"))
                .to_request();
            let response = call_service(&app, request).await;
            assert_eq!(response.status(), 200, "{method} {path}");
        }
        let put = TestRequest::put().uri("/things").to_request();
        let response = call_service(&app, put).await;
        assert_eq!(response.status(), 405);
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some("GET, POST")
        );
    }
}
