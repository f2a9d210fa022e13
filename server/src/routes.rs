//! A service's routes, declared once: [`routes!`](crate::routes!) writes both the
//! `configure` that registers them and the `ROUTES` list the OpenAPI test holds
//! against the document, so a route cannot be served without being listed, nor
//! listed without being served, and an undocumented one fails that test.

/// Declares the routes of a service:
///
/// ```ignore
/// protocol::routes! {
///     "/bans" => { GET => admin::list_bans, POST => admin::add_bans },
/// }
/// ```
///
/// makes `pub fn configure(&mut ServiceConfig)`, where each resource answers
/// the methods named and every other method `405` with an `Allow` header
/// naming them (in the order written), and `pub const ROUTES: &[(&str, &str)]`,
/// every `(METHOD, path)` that `configure` serves.
#[macro_export]
macro_rules! routes {
    ($( $path:literal => { $( $method:ident => $handler:path ),+ $(,)? } ),+ $(,)?) => {
        /// Every `(METHOD, path)` [`configure`] serves; the OpenAPI document must
        /// describe exactly these (a test compares them).
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path) ),+ ),+ ];

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
    use actix_web::test::{TestRequest, call_service, init_service};
    use actix_web::{App, HttpResponse};

    async fn ok() -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    mod service {
        use super::ok;

        crate::routes! {
            "/things" => { GET => ok, POST => ok },
            "/things/{id}" => { DELETE => ok },
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
