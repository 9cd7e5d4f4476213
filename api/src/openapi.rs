//! The OpenAPI 3 description, generated from the handlers' annotations.

use crate::error::ErrorBody;
use crate::routes::{coupons, issue, ops};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "coupon-rush", description = "First-come-first-served coupon issuance."),
    paths(coupons::create, coupons::get, issue::issue, issue::status, ops::healthz, ops::readyz, ops::metrics, ops::openapi),
    components(schemas(ErrorBody, coupons::NewCoupon, coupons::CouponBody, coupons::CouponWithCounts, issue::IssueRequest, issue::Accepted, issue::IssueStatus)),
    modifiers(&AdminAuth)
)]
struct ApiDoc;

struct AdminAuth;

impl Modify for AdminAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
