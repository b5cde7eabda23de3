package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
)

const passwdUsage = `usage: edgeinferd passwd <file> <user>

Sets <user>'s password in <file>, a password file in Mosquitto's format
(the same entries as mosquitto_passwd's), for [mqtt.embedded] users_file or
Mosquitto's password_file. The file is made if it does not exist. The
password is read from the terminal (asked twice, not shown), or from the
first line of standard input; never from the command line.`

// passwd is `edgeinferd passwd <file> <user>`.
func passwd(args []string, in io.Reader, out io.Writer) int {
	if len(args) != 2 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(out, passwdUsage)
		return 2
	}
	file, user := args[0], args[1]
	password, err := readPassword(in, out)
	if err == nil && password == "" {
		err = errors.New("empty password")
	}
	if err == nil {
		err = broker.SetPassword(file, user, password)
	}
	if err != nil {
		fmt.Fprintf(out, "edgeinferd passwd: %s: %v\n", file, err)
		return 1
	}
	fmt.Fprintf(out, "%s: password of %s set\n", file, user)
	return 0
}

// readPassword asks on a terminal with echo off, twice; from anything
// else it reads the first line.
func readPassword(in io.Reader, prompt io.Writer) (string, error) {
	f, ok := in.(*os.File)
	var state *unix.Termios
	if ok {
		state, _ = unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	}
	if state == nil {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("reading the password from standard input: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	quiet := *state
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &quiet); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, state)
	r := bufio.NewReader(f)
	var entered [2]string
	for i, p := range []string{"Password: ", "Again: "} {
		fmt.Fprint(prompt, p)
		line, err := r.ReadString('\n')
		fmt.Fprintln(prompt)
		if err != nil {
			return "", err
		}
		entered[i] = strings.TrimRight(line, "\r\n")
	}
	if entered[0] != entered[1] {
		return "", errors.New("the two passwords differ")
	}
	return entered[0], nil
}
