// Package metadata reads mirrord's spec from the instance's own metadata:
// the key mirrord-mirrors (the compact form of MIRRORD_MIRRORS), the key
// mirrord-config (a TOML document in the file's schema) and the key
// mirrord-credentials (NAME=SECRET lines that mirrors name with
// password_metadata; its value is held as a spec.Secret and never logged,
// shown or stored). It is the lowest of mirrord's config layers; the file
// and the environment override it.
//
// # Providers
//
// One file per provider, each reading every key:
//
//   - gce: computeMetadata/v1 with Metadata-Flavor: Google; instance
//     attributes, then project attributes beneath them.
//   - yandex: the same API; instance attributes only.
//   - aws: EC2 IMDSv2 (a token from PUT /latest/api/token, then the token on
//     every read; IMDSv1 only when allowed); instance tags in metadata.
//   - azure: IMDS compute/tagsList with Metadata: true and an api-version.
//   - openstack: "meta" of meta_data.json, from a mounted config drive when
//     one is found, else from the metadata service.
//   - cloud-init: cloud-init's saved /run/cloud-init/instance-data.json; no
//     network at all.
//
// # Detection
//
// With Provider "auto", [Detect] picks the provider from cloud-init's
// instance data or from DMI, and never by probing addresses: a node that is
// in no known cloud pays nothing for the metadata step.
//
// # Boot speed
//
// [Fetch] is bounded as a whole by Options.Timeout (2 s by default). Every
// connection attempt has a short dial timeout and is retried until the
// bound, so a black-holed route is abandoned at the bound rather than after
// the kernel's ≈130 s of SYN retries; no route, an unreachable or blackhole
// route and a refused connection end the step at once. No HTTP client has a
// Timeout, which would break long polls; contexts bound every request.
// Requests never go through a proxy.
//
// # Results
//
// [ErrNoMetadata] means there is nothing to take from metadata: the caller
// falls back to the other layers. Every other error means metadata could not
// be read as it should (a malformed document, an unreadable file) and the
// caller keeps the configuration in place. A value that is present is
// returned as it is: parsing it, and naming the provider, key and value when
// it is invalid, is the caller's job ([Values.Source] says where it came
// from).
//
// # Following changes
//
// A [Watcher] returns when the values change: GCE and Yandex by long-polling
// with wait_for_change and the ETag, the others by polling at
// Options.Interval with jitter. Failures are logged once and retried with
// backoff; they never look like a change.
//
// Tokens (the IMDSv2 token) and response bodies never appear in logs or
// errors; only URLs, statuses and the keys' names do.
package metadata
