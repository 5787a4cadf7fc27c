package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/bundles/pin"
	"github.com/toolgate/toolgate/bundles/sign"
)

// registryFlags are the flags every command that talks to a registry takes.
type registryFlags struct {
	insecure bool
	caCert   string
	timeout  time.Duration
	maxSize  byteSize
}

func (f *registryFlags) add(c *cobra.Command) {
	c.Flags().BoolVar(&f.insecure, "insecure-registry", false, "allow plain HTTP to a registry that is not on loopback")
	c.Flags().StringVar(&f.caCert, "registry-ca", "", "PEM file of the CA that signed the registry's TLS certificate")
	c.Flags().DurationVar(&f.timeout, "registry-timeout", 30*time.Second, "timeout of each registry request")
	f.maxSize = 32 << 20
	c.Flags().Var(&f.maxSize, "max-bundle-size", "largest bundle layer accepted (bytes, or with a unit: 32MiB)")
}

func (f *registryFlags) options() []oci.Option {
	opts := []oci.Option{oci.WithInsecure(f.insecure), oci.WithTimeout(f.timeout), oci.WithMaxSize(int64(f.maxSize))}
	if f.caCert != "" {
		opts = append(opts, oci.WithCACert(f.caCert))
	}
	return opts
}

// cosignPassword reads the private key's password as cosign does: from
// COSIGN_PASSWORD (which may be set empty), else, when stdin is a
// terminal, from a prompt on stderr without echo — twice when confirm is
// set (a new key). Without either it is bad usage.
func cosignPassword(confirm bool) ([]byte, error) {
	if pw, ok := os.LookupEnv("COSIGN_PASSWORD"); ok {
		return []byte(pw), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, usageError{errors.New("set COSIGN_PASSWORD to the private key's password (COSIGN_PASSWORD= for none), or run on a terminal to be asked")}
	}
	fmt.Fprint(os.Stderr, "Enter password for private key: ")
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("reading the password: %w", err)
	}
	if confirm {
		fmt.Fprint(os.Stderr, "Enter password for private key again: ")
		again, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, fmt.Errorf("reading the password: %w", err)
		}
		if string(again) != string(pw) {
			return nil, usageError{errors.New("the passwords differ")}
		}
	}
	return pw, nil
}

func readKeys(paths []string) ([][]byte, error) {
	if len(paths) == 0 {
		return nil, usageError{errors.New("give the public key with --key FILE (repeat it for several keys)")}
	}
	var keys [][]byte
	for _, p := range paths {
		if p == "" {
			return nil, usageError{errors.New("--key: an empty file name")}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading public key: %w", err)
		}
		keys = append(keys, b)
	}
	return keys, nil
}

func keygenCmd() *cobra.Command {
	var prefix string
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Write a cosign-compatible key pair (PREFIX.key, PREFIX.pub)",
		Long: "Keygen writes an ECDSA P-256 key pair in cosign's format; the private key is encrypted\n" +
			"with COSIGN_PASSWORD, or a password asked for on the terminal, as `cosign generate-key-pair` does.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := cosignPassword(true)
			if err != nil {
				return err
			}
			priv, pub, err := sign.GenerateKeys(pw)
			if err != nil {
				return err
			}
			for _, f := range []struct {
				path string
				data []byte
				mode os.FileMode
			}{{prefix + ".key", priv, 0o600}, {prefix + ".pub", pub, 0o644}} {
				if _, err := os.Stat(f.path); err == nil {
					return problemError{fmt.Errorf("%s exists; remove it or choose another --output-key-prefix", f.path)}
				}
				if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s.key (private, keep it secret) and %s.pub\n", prefix, prefix)
			return nil
		},
	}
	c.Flags().StringVar(&prefix, "output-key-prefix", "cosign", "file name prefix of the key pair")
	return c
}

func pushCmd() *cobra.Command {
	var rf registryFlags
	var key, source string
	c := &cobra.Command{
		Use:   "push FILE REF [--key KEY]",
		Short: "Push a bundle to an OCI registry (and sign it with --key); prints only REPO@sha256:…",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			opts := rf.options()
			if !cmd.Flags().Changed("source") {
				source = gitSource(".")
			}
			if source != "" {
				opts = append(opts, oci.WithSource(source))
			}
			if t, ok := commitTime(raw); ok {
				opts = append(opts, oci.WithCreated(t))
			}
			d, err := oci.Push(cmd.Context(), raw, args[1], opts...)
			if err != nil {
				return problemError{err}
			}
			if key != "" {
				if err := signDigest(cmd, d.String(), key, &rf); err != nil {
					return err
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), d.String())
			return nil
		},
	}
	rf.add(c)
	c.Flags().StringVar(&key, "key", "", "cosign private key to sign the pushed bundle with (COSIGN_PASSWORD unlocks it)")
	c.Flags().StringVar(&source, "source", "", "URL of the policy repository, recorded as org.opencontainers.image.source (default: the origin remote of the git work tree here)")
	return c
}

func signDigest(cmd *cobra.Command, ref, keyPath string, rf *registryFlags) error {
	d, err := oci.ParseDigest(ref, rf.options()...)
	if err != nil {
		return usageError{err}
	}
	priv, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("reading private key: %w", err)
	}
	pw, err := cosignPassword(false)
	if err != nil {
		return err
	}
	nd, isRegistry := d.Name()
	if !isRegistry {
		dir, _ := d.Layout()
		if err := sign.SignLayout(cmd.Context(), dir, d.Hash(), priv, pw); err != nil {
			return problemError{err}
		}
		return nil
	}
	remote, err := oci.RemoteOptions(rf.options()...)
	if err != nil {
		return err
	}
	if err := sign.Sign(cmd.Context(), nd, priv, pw, remote...); err != nil {
		return problemError{err}
	}
	return nil
}

func signCmd() *cobra.Command {
	var rf registryFlags
	var key string
	c := &cobra.Command{
		Use:   "sign REF@DIGEST --key KEY",
		Short: "Sign a pushed bundle with a cosign key (no transparency log)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return usageError{errors.New("sign needs --key KEY")}
			}
			return signDigest(cmd, args[0], key, &rf)
		},
	}
	rf.add(c)
	c.Flags().StringVar(&key, "key", "", "cosign private key (COSIGN_PASSWORD unlocks it)")
	return c
}

func verifyDigest(cmd *cobra.Command, ref string, keyPaths []string, rf *registryFlags) (oci.Digest, error) {
	d, err := oci.ParseDigest(ref, rf.options()...)
	if err != nil {
		return d, usageError{err}
	}
	keys, err := readKeys(keyPaths)
	if err != nil {
		return d, err
	}
	nd, isRegistry := d.Name()
	if !isRegistry {
		dir, _ := d.Layout()
		if err := sign.VerifyLayout(cmd.Context(), dir, d.Hash(), keys); err != nil {
			return d, problemError{err} // it names the layout and digest
		}
		return d, nil
	}
	remote, err := oci.RemoteOptions(rf.options()...)
	if err != nil {
		return d, err
	}
	if err := sign.Verify(cmd.Context(), nd, keys, remote...); err != nil {
		return d, problemError{err} // "verifying REF@DIGEST: …"
	}
	return d, nil
}

func verifyCmd() *cobra.Command {
	var rf registryFlags
	var keys []string
	c := &cobra.Command{
		Use:   "verify REF@DIGEST --key PUB [--key PUB…]",
		Short: "Check that a listed key signed the bundle at this digest",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := verifyDigest(cmd, args[0], keys, &rf)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), d) // the result: the digest verified
			return nil
		},
	}
	rf.add(c)
	c.Flags().StringArrayVar(&keys, "key", nil, "cosign public key; repeat for several (any of them may have signed)")
	return c
}

func pullCmd() *cobra.Command {
	var rf registryFlags
	var keys []string
	var out string
	c := &cobra.Command{
		Use:   "pull REF@DIGEST --key PUB -o FILE",
		Short: "Verify, pull and write a bundle, by digest only",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError{errors.New("pull needs -o FILE")}
			}
			d, err := verifyDigest(cmd, args[0], keys, &rf)
			if err != nil {
				return err
			}
			raw, err := oci.Pull(cmd.Context(), d, rf.options()...)
			if err != nil {
				return problemError{err}
			}
			if err := writeFileAtomic(out, raw); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), bundles.Digest(raw))
			return nil
		},
	}
	rf.add(c)
	c.Flags().StringArrayVar(&keys, "key", nil, "cosign public key; repeat for several")
	c.Flags().StringVarP(&out, "output", "o", "", "bundle file to write")
	return c
}

// keysInFile checks that each --key given for an existing pin file is one
// of its keys (the same key, wherever its file is): pin verifies with the
// file's keys (those the proxy trusts), and a bundle only another key
// signed would be pinned, then refused.
func keysInFile(keys, fileKeys []string) error {
	for _, k := range keys {
		kb, err := os.ReadFile(k)
		if err != nil {
			return fmt.Errorf("reading --key: %w", err)
		}
		found := false
		for _, fk := range fileKeys {
			if fb, err := os.ReadFile(fk); err == nil && bytes.Equal(bytes.TrimSpace(fb), bytes.TrimSpace(kb)) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("--key %s is not one of the pin file's keys (%s), which the proxy trusts; add it to publicKey: there first (key rotation)", k, strings.Join(fileKeys, ", "))
		}
	}
	return nil
}

// keyFromPinFile is key (a path from the working folder) as a new pin file
// at pinFile records it: a relative key relative to the pin file's folder
// (../keys/a.pub when it lies outside), so that the pair can move together
// (a git checkout); an absolute key inside that folder relative too, one
// outside it absolute.
func keyFromPinFile(pinFile, key string) string {
	abs, err := filepath.Abs(key)
	if err != nil {
		return filepath.ToSlash(key) // no working folder: key is all there is
	}
	dir, err := filepath.Abs(filepath.Dir(pinFile))
	if err != nil {
		return filepath.ToSlash(abs)
	}
	rel, err := filepath.Rel(dir, abs)
	if err != nil || (filepath.IsAbs(key) && (rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)))) {
		return filepath.ToSlash(abs) // another drive, or an absolute key outside the folder
	}
	return filepath.ToSlash(rel)
}

func pinCmd() *cobra.Command {
	var rf registryFlags
	var pinFile string
	var keys []string
	c := &cobra.Command{
		Use:   "pin REF@DIGEST --pin-file FILE [--key PUB…]",
		Short: "Verify a bundle's signature, then pin it in the pin file (keeping history)",
		Long: "Pin verifies the bundle with the pin file's public keys, then writes it as the pinned\n" +
			"bundle, with the previous one at the top of history. A new pin file needs --key (recorded\n" +
			"relative to the pin file); for an existing one, --key must be one of its keys.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pinFile == "" {
				return usageError{errors.New("pin needs --pin-file FILE")}
			}
			if strings.HasPrefix(args[0], oci.LayoutPrefix) {
				return usageError{fmt.Errorf("%s: a pin file names a registry digest; load a layout with proxy --bundle oci:DIR@sha256:… --key PUB", args[0])}
			}
			f, err := pin.Read(pinFile)
			switch {
			case errors.Is(err, os.ErrNotExist):
				if len(keys) == 0 {
					return usageError{fmt.Errorf("%s does not exist yet: give the public key with --key", pinFile)}
				}
				f = pin.New(pinFile)
				for _, k := range keys {
					f.PublicKeys = append(f.PublicKeys, keyFromPinFile(pinFile, k))
				}
				if len(f.PublicKeys) == 1 {
					f.PublicKey, f.PublicKeys = f.PublicKeys[0], nil
				}
			case err != nil:
				return problemError{err}
			default:
				// The proxy trusts the file's keys: a pin must verify with
				// them, whatever --key says.
				if err := keysInFile(keys, f.KeyPaths()); err != nil {
					return usageError{fmt.Errorf("%s: %w", pinFile, err)}
				}
			}
			d, err := verifyDigest(cmd, args[0], f.KeyPaths(), &rf)
			if err != nil {
				return err
			}
			nd, _ := d.Name()
			f.Pin(nd, time.Now())
			if err := f.Write(pinFile); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), nd.String())
			return nil
		},
	}
	rf.add(c)
	c.Flags().StringVar(&pinFile, "pin-file", "", "the pin file (YAML) to update")
	c.Flags().StringArrayVar(&keys, "key", nil, "cosign public key to verify with (default: the pin file's keys)")
	return c
}

func rollbackCmd() *cobra.Command {
	var pinFile, to string
	c := &cobra.Command{
		Use:   "rollback --pin-file FILE [--to DIGEST]",
		Short: "Re-pin the previous digest from the pin file's history (or the one named)",
		Long: "Rollback re-pins an earlier digest from history without contacting the registry: it works\n" +
			"during an outage. The proxy verifies the bundle's signature when it loads it (from its\n" +
			"cache if the registry is down).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pinFile == "" {
				return usageError{errors.New("rollback needs --pin-file FILE")}
			}
			f, err := pin.Read(pinFile)
			if err != nil {
				return problemError{err}
			}
			d, err := f.Rollback(to)
			if err != nil {
				return problemError{err}
			}
			f.Pin(d, time.Now())
			if err := f.Write(pinFile); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), d.String())
			return nil
		},
	}
	c.Flags().StringVar(&pinFile, "pin-file", "", "the pin file (YAML) to update")
	c.Flags().StringVar(&to, "to", "", "digest to roll back to (sha256:… or REPO@sha256:…); default: the previous one")
	return c
}
