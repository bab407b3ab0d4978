module github.com/mirrord/mirrord

go 1.26.8

require (
	github.com/aymanbagabas/go-udiff v0.3.1
	github.com/google/go-cmp v0.7.0
	github.com/kelseyhightower/envconfig v1.4.0
	github.com/pelletier/go-toml/v2 v2.4.3
)
