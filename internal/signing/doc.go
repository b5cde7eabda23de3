// Package signing signs model versions with ed25519 and checks them
// against a set of trusted keys, so that a device serves only versions a
// trusted key holder made and nobody changed since.
//
// A version carries edgeinfer.sig, which lists the SHA-256 of every other
// file of the version (relative paths, sorted) under the signer's key id,
// and an ed25519 signature of that list. Verify hashes the files again: a
// file added, removed or changed after signing, a signature by a key the
// trusted-keys file does not hold, or a signature that does not verify
// are each an error naming the file at fault.
//
// The formats are text, one item a line (see README.md): a trusted-keys
// file holds "ed25519 <base64 public key> <name>" lines, a private key file
// one "ed25519-private <base64 seed> <name>" line.
//
// It lives in internal/ because both the daemon (vetting versions before
// they load) and edgeinferd's keygen, sign and verify subcommands use it,
// and nothing outside this module should.
package signing
