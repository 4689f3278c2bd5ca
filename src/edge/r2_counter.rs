//! Counts the R2 operations an isolate makes, per kind, for the admins' channel stats.
//!
//! The bucket binding is wrapped in a `Proxy` that counts each operation it is asked for
//! (`get`, `head`, `put`, `delete`, `list`, `createMultipartUpload`, `resumeMultipartUpload`:
//! one count per call, whatever it passes; parts of a multipart upload are not counted), so no
//! call site can forget to. The counts are the isolate's, since it started: an isolate serves
//! many requests of every channel, and a deployment has many isolates.

use std::cell::RefCell;
use std::collections::BTreeMap;

use js_sys::{Function, Object, Proxy, Reflect};
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use worker::Bucket;

/// The binding's operations, as R2's API names them.
const OPERATIONS: [&str; 7] = [
    "get",
    "head",
    "put",
    "delete",
    "list",
    "createMultipartUpload",
    "resumeMultipartUpload",
];

thread_local! {
    static COUNTS: RefCell<[u64; OPERATIONS.len()]> = const { RefCell::new([0; OPERATIONS.len()]) };
    static HANDLER: Object = counting_handler();
}

/// The Proxy handler: a property that is one of [`OPERATIONS`] is counted and handed out bound
/// to the binding itself (R2's methods check their receiver).
fn counting_handler() -> Object {
    let get = Closure::<dyn Fn(JsValue, JsValue) -> Result<JsValue, JsValue>>::new(
        |target: JsValue, property: JsValue| {
            let value = Reflect::get(&target, &property)?;
            let Some(method) = value.dyn_ref::<Function>() else {
                return Ok(value);
            };
            let name = property.as_string().unwrap_or_default();
            if let Some(kind) = OPERATIONS.iter().position(|op| *op == name) {
                COUNTS.with(|counts| counts.borrow_mut()[kind] += 1);
            }
            Ok(method.bind0(&target).into())
        },
    );
    let handler = Object::new();
    Reflect::set(&handler, &"get".into(), get.as_ref()).expect("a plain object takes a property");
    // The handler lives as long as the isolate.
    get.forget();
    handler
}

/// The bucket, counting.
pub fn counted(bucket: Bucket) -> Bucket {
    let target: JsValue = bucket.into();
    HANDLER
        .with(|handler| Proxy::new(&target, handler))
        .unchecked_into()
}

/// Every kind's count so far in this isolate.
pub fn counts() -> BTreeMap<String, u64> {
    COUNTS.with(|counts| {
        let counts = *counts.borrow();
        OPERATIONS
            .into_iter()
            .map(str::to_owned)
            .zip(counts)
            .collect()
    })
}
