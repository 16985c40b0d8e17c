package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Errors an S3 store maps its service's answers to, so that callers (and
// the CLI's one-line messages) need not know S3 error codes.
var (
	// ErrAccessDenied: the credentials are wrong or lack a permission.
	ErrAccessDenied = errors.New("access denied")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("no such bucket")
	// ErrUnreachable: the endpoint did not answer.
	ErrUnreachable = errors.New("endpoint unreachable")
)

// S3Options tune an S3 store. Zero values take the defaults.
type S3Options struct {
	// Endpoint overrides AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. With an
	// endpoint, requests use path-style addressing (what MinIO, Ceph and
	// versitygw expect); without one, AWS's virtual-hosted style.
	Endpoint string
	// Region overrides AWS_REGION / AWS_DEFAULT_REGION; default us-east-1.
	Region string
	// MaxAttempts bounds the tries of one request (default 10): 5xx,
	// throttling and network errors are retried with jittered exponential
	// backoff up to MaxBackoff (default 5 s).
	MaxAttempts int
	MaxBackoff  time.Duration
	// Timeout bounds one attempt of one request (default 60 s: a 4 MiB
	// block on a slow link).
	Timeout time.Duration
	// Concurrency bounds the requests in flight (default 32).
	Concurrency int
}

// S3Store is the S3-compatible backend: the object with key "a/b" is the
// S3 object <prefix>/a/b in the bucket. A single PUT is atomic in S3, so an
// object is whole or absent; objects are written with one PUT each (blocks
// are far below S3's 5 GiB single-PUT limit), so no multipart upload is ever
// left half done.
type S3Store struct {
	client *s3.Client
	bucket string
	prefix string // "" or ends with "/"
	where  string // for messages: s3://bucket/prefix at endpoint
	sem    chan struct{}

	endpoint, region string
}

// ParseS3URL splits s3://bucket/prefix into its bucket and prefix (without
// leading or trailing slashes).
func ParseS3URL(url string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(url, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL", url)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket (want s3://bucket/prefix)", url)
	}
	if prefix != "" {
		if err := ValidateKey(prefix); err != nil {
			return "", "", fmt.Errorf("%q: bad prefix: %w", url, err)
		}
	}
	return bucket, prefix, nil
}

// NewS3 opens the store at s3://bucket/prefix. It makes one request
// (HeadBucket) so that wrong credentials, a missing bucket or an
// unreachable endpoint fail here with one clear line.
func NewS3(ctx context.Context, url string, opts S3Options) (*S3Store, error) {
	bucket, prefix, err := ParseS3URL(url)
	if err != nil {
		return nil, fmt.Errorf("open object store: %w", err)
	}
	if opts.Endpoint == "" {
		opts.Endpoint = firstEnv("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	}
	if opts.Region == "" {
		opts.Region = firstEnv("AWS_REGION", "AWS_DEFAULT_REGION")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 10
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 32
	}

	httpClient := awshttp.NewBuildableClient().
		WithTimeout(opts.Timeout).
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 5 * time.Second }).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = opts.Concurrency
			t.ResponseHeaderTimeout = opts.Timeout
		})
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(opts.Region),
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opts.MaxAttempts
				o.MaxBackoff = opts.MaxBackoff
				// The default token bucket gives up on retries after a burst
				// of errors; attempts are bounded per request already.
				o.RateLimiter = ratelimit.None
				// A response cut off in its body (a dropped connection, a
				// proxy giving up) surfaces as a deserialization error,
				// which the SDK does not retry. Every request of ours can
				// be repeated: objects are immutable, and the lease's
				// conditional writes check what a lost answer did.
				o.Retryables = append(slices.Clone(o.Retryables), retry.IsErrorRetryableFunc(retryCutOff))
			})
		}),
		// Checksums only where the API requires them: not every
		// S3-compatible store knows the newer checksum headers, and blocks
		// carry their own checksums.
		// The SDK's own log (e.g. a warning for every response body cut
		// short, which the retries handle) would go to the mount's output.
		config.WithLogger(logging.Nop{}),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: load AWS configuration: %w", url, err)
	}
	where := url
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
			o.UsePathStyle = true
		}
	})
	if opts.Endpoint != "" {
		where = url + " at " + opts.Endpoint
	}
	s := &S3Store{client: client, bucket: bucket, where: where, sem: make(chan struct{}, opts.Concurrency),
		endpoint: opts.Endpoint, region: opts.Region}
	if prefix != "" {
		s.prefix = prefix + "/"
	}

	// A quick probe, retried less than data requests: a wrong endpoint
	// should fail in seconds, not after a minute of backoff. A listing
	// (unlike HeadBucket) answers with an error code in its body.
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		_, err = client.ListObjectsV2(pctx, &s3.ListObjectsV2Input{
			Bucket:  aws.String(bucket),
			Prefix:  aws.String(s.prefix),
			MaxKeys: aws.Int32(1),
		}, func(o *s3.Options) { o.RetryMaxAttempts = 3 })
		if err == nil {
			return s, nil
		}
		refused := isRefused(err)
		err = s.mapErr(err)
		if errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("bucket %q does not exist: %w", bucket, ErrNoBucket)
		}
		// A definite answer (no such bucket, access denied, nobody
		// listening) ends the probe; a store that is only struggling
		// (5xx, an answer cut short) gets more tries while the probe's
		// time lasts, as data requests do.
		if refused || probeFinal(err) || pctx.Err() != nil {
			return nil, fmt.Errorf("open object store %s: %w", where, err)
		}
	}
}

// probeFinal says whether an error of the opening probe is an answer
// rather than a passing fault.
func probeFinal(err error) bool {
	return errors.Is(err, ErrNoBucket) || errors.Is(err, ErrAccessDenied)
}

// isRefused says whether err means nobody listens at the endpoint (or its
// name does not resolve), as opposed to a connection that broke.
func isRefused(err error) bool {
	var dnsErr *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr)
}

// retryCutOff says to retry a request whose response body ended early.
func retryCutOff(err error) aws.Ternary {
	var de *smithy.DeserializationError
	if errors.As(err, &de) || errors.Is(err, io.ErrUnexpectedEOF) {
		return aws.TrueTernary
	}
	return aws.UnknownTernary
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// String names the store: s3://bucket/prefix, and the endpoint if one is set.
func (s *S3Store) String() string { return s.where }

// Bucket returns the store's bucket.
func (s *S3Store) Bucket() string { return s.bucket }

// Prefix returns the store's key prefix: "" or a path ending in "/".
func (s *S3Store) Prefix() string { return s.prefix }

// Endpoint returns the endpoint URL in use, "" for AWS's own.
func (s *S3Store) Endpoint() string { return s.endpoint }

// Region returns the region in use.
func (s *S3Store) Region() string { return s.region }

// Client returns the S3 client, for packages that speak S3 themselves (the
// metadata replica, the lease's conditional writes).
func (s *S3Store) Client() *s3.Client { return s.client }

func (s *S3Store) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *S3Store) release() { <-s.sem }

// mapErr turns the SDK's multi-part error text into one of this package's
// errors with the S3 code in brackets.
func (s *S3Store) mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code := apiErr.ErrorCode()
		switch code {
		case "NoSuchKey", "NotFound":
			return ErrNotFound
		case "NoSuchBucket":
			return fmt.Errorf("bucket %q does not exist: %w", s.bucket, ErrNoBucket)
		case "InvalidAccessKeyId", "XAdminUserNotFound", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "Forbidden", "InvalidSecurity":
			return fmt.Errorf("%w (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", ErrAccessDenied, code)
		}
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &opErr) || errors.As(err, &dnsErr) || strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("%w: %s", ErrUnreachable, lastPart(err))
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) && respErr.HTTPStatusCode() != 0 {
		switch respErr.HTTPStatusCode() {
		case http.StatusNotFound:
			return ErrNotFound
		case http.StatusForbidden:
			return fmt.Errorf("%w (HTTP 403): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", ErrAccessDenied)
		}
		code := ""
		if apiErr != nil {
			code = " " + apiErr.ErrorCode()
		}
		return fmt.Errorf("S3 answered HTTP %d%s", respErr.HTTPStatusCode(), code)
	}
	if strings.Contains(err.Error(), "failed to retrieve credentials") || strings.Contains(err.Error(), "no EC2 IMDS role found") {
		return fmt.Errorf("%w: no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", ErrAccessDenied)
	}
	return errors.New(lastPart(err))
}

// lastPart keeps the innermost cause of an SDK error chain, which is the
// part a person can act on.
func lastPart(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

func (s *S3Store) objectKey(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// Put stores data under key with one PUT, which S3 makes atomic; it is
// durable when the store acknowledges it.
func (s *S3Store) Put(ctx context.Context, key string, data []byte) error {
	k, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	defer s.release()
	body := &onceReader{r: bytes.NewReader(data)}
	// The HTTP transport may still hold the body after a request fails;
	// the caller owns data again once Put returns, so cut the body off.
	defer body.close()
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(k),
		Body:          body,
		ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return fmt.Errorf("put %s in %s: %w", key, s.where, s.mapErr(err))
	}
	return nil
}

// onceReader is a seekable body that stops reading its data once closed.
type onceReader struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed bool
}

func (o *onceReader) Read(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, io.ErrClosedPipe
	}
	return o.r.Read(p)
}

func (o *onceReader) Seek(off int64, whence int) (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, io.ErrClosedPipe
	}
	return o.r.Seek(off, whence)
}

func (o *onceReader) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// Get returns length bytes of key from off (length < 0: to the end). A
// range past the end of the object is cut short.
func (s *S3Store) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if off < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", key, off)
	}
	if length == 0 {
		if _, err := s.Head(ctx, key); err != nil {
			return nil, err
		}
		return []byte{}, nil
	}
	if err := s.acquire(ctx); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer s.release()
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+length-1))
	case off > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
	}
	// A body cut short by a dropped connection is read again from the
	// start; the SDK retries only up to the response headers.
	for attempt := 1; ; attempt++ {
		out, err := s.client.GetObject(ctx, in)
		if err != nil {
			var respErr *smithyhttp.ResponseError
			if errors.As(err, &respErr) && respErr.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable {
				if _, err := s.headLocked(ctx, key, k); err != nil {
					return nil, err
				}
				return []byte{}, nil // off is at or past the end
			}
			err = s.mapErr(err)
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("get %s in %s: %w", key, s.where, ErrNotFound)
			}
			return nil, fmt.Errorf("get %s in %s: %w", key, s.where, err)
		}
		var buf []byte
		if out.ContentLength != nil && *out.ContentLength >= 0 {
			buf = make([]byte, 0, *out.ContentLength)
		}
		b := bytes.NewBuffer(buf)
		_, err = b.ReadFrom(out.Body)
		out.Body.Close()
		if err == nil && out.ContentLength != nil && int64(b.Len()) != *out.ContentLength {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			return b.Bytes(), nil
		}
		if ctx.Err() != nil || attempt >= 5 {
			return nil, fmt.Errorf("get %s in %s: read body: %w", key, s.where, err)
		}
		if err := sleepCtx(ctx, time.Duration(attempt)*100*time.Millisecond); err != nil {
			return nil, fmt.Errorf("get %s: %w", key, err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Head returns the size and modification time of key.
func (s *S3Store) Head(ctx context.Context, key string) (ObjectInfo, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("head %s: %w", key, err)
	}
	if err := s.acquire(ctx); err != nil {
		return ObjectInfo{}, fmt.Errorf("head %s: %w", key, err)
	}
	defer s.release()
	return s.headLocked(ctx, key, k)
}

func (s *S3Store) headLocked(ctx context.Context, key, k string) (ObjectInfo, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("head %s in %s: %w", key, s.where, s.mapErr(err))
	}
	return ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// Delete removes key; a missing key is not an error.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	k, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	defer s.release()
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		if err = s.mapErr(err); errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s in %s: %w", key, s.where, err)
	}
	return nil
}

// List calls fn for every object whose key starts with prefix.
func (s *S3Store) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	p := s.paginator(prefix)
	for p.HasMorePages() {
		if err := s.acquire(ctx); err != nil {
			return fmt.Errorf("list %q: %w", prefix, err)
		}
		page, err := p.NextPage(ctx)
		s.release()
		if err != nil {
			return fmt.Errorf("list %q in %s: %w", prefix, s.where, s.mapErr(err))
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if key == "" || strings.HasSuffix(key, "/") {
				continue // a "directory marker" some tools create
			}
			if err := fn(ObjectInfo{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *S3Store) paginator(prefix string) *s3.ListObjectsV2Paginator {
	return s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + prefix),
	})
}
