// Package session is the data plane's table of downstream (client) sessions:
// a session's state is sealed into the id the client gets (seal.go), so that
// any replica holding the snapshot's session keys opens it, and each replica
// keeps only what its idle sweep needs of the sessions it served (store.go).
// The gateway creates, opens and ends sessions through Store.
package session
