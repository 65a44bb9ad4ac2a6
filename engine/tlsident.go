package engine

// certUsername is the Subject CN of the connection's verified TLS client
// certificate when Options.TLSCertAsUsername is on. Runs on c's loop.
func (c *conn) certUsername() (string, bool) { return "", false }

// reloadTLS re-reads the TLS certificates. Any goroutine.
func (b *Broker) reloadTLS() error { return nil }
