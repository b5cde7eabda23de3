module github.com/edgeinfer/edgeinfer

go 1.26.8
