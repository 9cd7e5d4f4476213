//! The OpenAPI 3 description: what is not a route (title, security scheme,
//! shared schemas) is declared here; the paths come from [`crate::routes::declared`].

use crate::error::ErrorBody;
use std::sync::LazyLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "coupon-rush", description = "First-come-first-served coupon issuance."),
    components(schemas(ErrorBody)),
    modifiers(&BearerSchemes)
)]
struct ApiDoc;

/// `admin`: the `ADMIN_TOKEN`; `user_jwt`: a user's JWT, required on the issue
/// and status endpoints when the API verifies them (`AUTH_JWT_*`).
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "user_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document before the routes add their paths and schemas.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Built once: the routes never change while the process runs.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| crate::routes::declared().into_openapi());

/// The document served at `/openapi.json`.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    &DOCUMENT
}
