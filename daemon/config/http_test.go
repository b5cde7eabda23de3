package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestHTTPListenIsOffByDefaultAndTakesAHostAndPort(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	c, err := Parse("config.toml", valid(repo, plugins, inbox))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Listen != "" {
		t.Fatalf("http.listen defaults to %q, want \"\" (no endpoint)", c.HTTP.Listen)
	}
	for _, listen := range []string{"127.0.0.1:9470", ":9470", "[::1]:0", "localhost:8080"} {
		c, err := Parse("config.toml", valid(repo, plugins, inbox)+"\n[http]\nlisten = \""+listen+"\"\n")
		if err != nil {
			t.Fatalf("%s: %v", listen, err)
		}
		if c.HTTP.Listen != listen {
			t.Fatalf("http.listen read as %q, want %q", c.HTTP.Listen, listen)
		}
	}
}

func TestABadHTTPListenNamesTheFileLineAndKey(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	src := valid(repo, plugins, inbox)
	line := strings.Count(src, "\n") + 3
	for _, c := range []struct{ value, want string }{
		{`"9470"`, `http.listen: "9470" is not host:port`},
		{`"127.0.0.1:http"`, `http.listen: "127.0.0.1:http" is not host:port`},
		{`"127.0.0.1:70000"`, `http.listen: "127.0.0.1:70000" is not host:port`},
		{`9470`, `http.listen: incompatible types`},
	} {
		_, err := Parse("config.toml", src+"\n[http]\nlisten = "+c.value+"\n")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), fmt.Sprintf("config.toml:%d:", line)) {
			t.Errorf("listen = %s: got %v, want config.toml:%d: ...%s", c.value, err, line, c.want)
		}
	}
	if _, err := Parse("config.toml", src+"\n[http]\nport = 9470\n"); err == nil || !strings.Contains(err.Error(), "http.port: unknown key") {
		t.Errorf("an unknown key of [http]: got %v", err)
	}
}

func TestAChangedHTTPListenNeedsARestart(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	old, err := Parse("config.toml", valid(repo, plugins, inbox))
	if err != nil {
		t.Fatal(err)
	}
	next, err := Parse("config.toml", valid(repo, plugins, inbox)+"\n[http]\nlisten = \"127.0.0.1:9470\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if ch := Diff(old, next); !slices.Equal(ch.Restart, []string{"http"}) || len(ch.Other) != 0 {
		t.Fatalf("changes %+v, want http restart-only", ch)
	}
}
