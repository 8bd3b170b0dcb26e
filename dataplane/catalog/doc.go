// Package catalog holds the pure pieces of the gateway's aggregated lists
// (tools, prompts, resources, resource templates): where a listed resource
// or template lives (Routes, kept per snapshot revision and endpoint by
// Cache), the client's opaque list cursor, and the caching hints of a
// merged list. It knows nothing of sessions, upstreams or HTTP: the gateway
// fetches the pages and feeds what they said in here.
package catalog
