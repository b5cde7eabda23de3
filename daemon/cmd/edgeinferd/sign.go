package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/edgeinfer/edgeinfer/internal/signing"
)

// signingCommands are the subcommands that make keys and sign and verify
// model versions (internal/signing).
var signingCommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"keygen": keygen, "sign": sign, "verify": verify,
}

const keygenUsage = `usage: edgeinferd keygen [-out <file>] <name>

Makes an ed25519 key pair for signing model versions. The private key is
written to <file> (default <name>.key, mode 0600, never overwritten); the
public key's line for [models] trusted_keys is printed.`

// keygen is `edgeinferd keygen [-out file] <name>`.
func keygen(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("edgeinferd keygen", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() { fmt.Fprintln(stderr, keygenUsage) }
	out := fl.String("out", "", "the private key file (default <name>.key)")
	if fl.Parse(args) != nil || fl.NArg() != 1 {
		fl.Usage()
		return 2
	}
	name := fl.Arg(0)
	if *out == "" {
		*out = name + ".key"
	}
	k, err := signing.GenerateKey(name)
	if err == nil {
		err = writeNew(*out, k.Marshal())
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgeinferd keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "%s: private key of %s (id %s); add this line to trusted_keys:\n", *out, name, k.Public().ID)
	fmt.Fprintln(stdout, k.Public())
	return 0
}

// writeNew writes a file readable by its owner only, refusing to replace
// one: a key overwritten by mistake cannot be had back.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: exists already; a key is never overwritten", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

const signUsage = `usage: edgeinferd sign -key <private key file> <version dir>...

Signs each model version directory: writes <version dir>/edgeinfer.sig, the
SHA-256 of every other file of the version signed with the key. Sign a
version before it is moved into the repository: any change after signing
(a file added, removed or changed) makes a daemon with trusted_keys
refuse it.`

// sign is `edgeinferd sign -key file <dir>...`.
func sign(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("edgeinferd sign", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() { fmt.Fprintln(stderr, signUsage) }
	keyFile := fl.String("key", "", "the private key file (edgeinferd keygen)")
	if fl.Parse(args) != nil || *keyFile == "" || fl.NArg() == 0 {
		fl.Usage()
		return 2
	}
	k, err := signing.ReadPrivateKey(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "edgeinferd sign: %v\n", err)
		return 1
	}
	for _, dir := range fl.Args() {
		s, err := signing.Sign(dir, k)
		if err != nil {
			fmt.Fprintf(stderr, "edgeinferd sign: %s: %v\n", dir, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: %d files signed by key %s (%s)\n", dir, len(s.Files), s.KeyID, s.KeyName)
	}
	return 0
}

const verifyUsage = `usage: edgeinferd verify -keys <trusted keys file> <version dir>...

Checks each model version directory's edgeinfer.sig as a daemon with
[models] trusted_keys does: signed by one of the keys, and no file added,
removed or changed since. Exits 1 if any version fails.`

// verify is `edgeinferd verify -keys file <dir>...`.
func verify(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("edgeinferd verify", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() { fmt.Fprintln(stderr, verifyUsage) }
	keysFile := fl.String("keys", "", "the trusted keys file")
	if fl.Parse(args) != nil || *keysFile == "" || fl.NArg() == 0 {
		fl.Usage()
		return 2
	}
	keys, err := signing.ReadKeys(*keysFile)
	if err != nil {
		fmt.Fprintf(stderr, "edgeinferd verify: %v\n", err)
		return 1
	}
	status := 0
	for _, dir := range fl.Args() {
		k, err := signing.Verify(dir, keys)
		if err != nil {
			fmt.Fprintf(stdout, "FAIL %s: %v\n", dir, err)
			status = 1
			continue
		}
		fmt.Fprintf(stdout, "ok   %s: signed by key %s (%s)\n", dir, k.ID, k.Name)
	}
	return status
}
