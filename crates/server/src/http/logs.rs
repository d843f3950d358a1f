//! (being built)

use super::Api;

pub fn routes(api: Api) -> Api {
    api
}
