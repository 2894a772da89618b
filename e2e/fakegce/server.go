package fakegce

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	compute "google.golang.org/api/compute/v1"
)

// selfLinkBase is the prefix of the API's resource URLs.
const selfLinkBase = "https://www.googleapis.com/compute/v1/"

// Request is one request the server received.
type Request struct {
	Method        string
	Path          string
	Query         url.Values
	Body          []byte
	Authorization string
}

// Fault answers requests whose method and path suffix match with an API
// error of Status; Times bounds how often (0: always).
type Fault struct {
	Method, PathSuffix string
	Status             int
	Times              int
}

// Server is the fake API. Its exported fields may be set before use.
type Server struct {
	// OpWaits is how many Wait calls return an operation RUNNING before
	// it is DONE.
	OpWaits int
	// PageSize bounds the items of a list page (default 500).
	PageSize int
	// Identity, if set, may change the shielded identity returned for an
	// instance (drop or replace keys).
	Identity func(instance string, id *compute.ShieldedInstanceIdentity)

	mu              sync.Mutex
	mux             *http.ServeMux
	images          map[string]*compute.Image // project/name
	instances       map[string]*instance      // project/zone/name
	ops             map[string]*operation     // project/zone/name
	requestID       map[string]*operation
	faults          []*Fault
	insertErr       *compute.OperationError
	insertErrStatus int
	requests        []Request
	nextID          uint64
}

type instance struct {
	inst    *compute.Instance
	ecc     *ecdsa.PrivateKey
	rsa     *rsa.PrivateKey
	created *compute.Instance // the insert body as the server decoded it
}

type operation struct {
	op        *compute.Operation
	key       string // the instance's project/zone/name
	waitsLeft int
	fail      *compute.OperationError
}

// New returns an empty server.
func New() *Server {
	s := &Server{
		images: map[string]*compute.Image{}, instances: map[string]*instance{},
		ops: map[string]*operation{}, requestID: map[string]*operation{}, nextID: 1000,
	}
	m := http.NewServeMux()
	const z = "/compute/v1/projects/{project}/zones/{zone}"
	m.HandleFunc("GET /compute/v1/projects/{project}/global/images/{image}", s.getImage)
	m.HandleFunc("POST "+z+"/instances", s.insert)
	m.HandleFunc("GET "+z+"/instances", s.list)
	m.HandleFunc("GET "+z+"/instances/{instance}", s.getInstance)
	m.HandleFunc("DELETE "+z+"/instances/{instance}", s.delete)
	m.HandleFunc("GET "+z+"/instances/{instance}/getShieldedInstanceIdentity", s.identity)
	m.HandleFunc("POST "+z+"/operations/{operation}/wait", s.waitOp)
	m.HandleFunc("GET "+z+"/operations/{operation}", s.getOp)
	m.HandleFunc("POST /token", s.token)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "notFound", fmt.Sprintf("The requested URL %s was not found on this server.", r.URL.Path))
	})
	s.mux = m
	return s
}

// Start serves a new server on loopback until the test ends.
func Start(t testing.TB) (*Server, *httptest.Server) {
	s := New()
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid", "unreadable body")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Body: body, Authorization: r.Header.Get("Authorization")})
	var fault *Fault
	for _, f := range s.faults {
		if f.Method == r.Method && strings.HasSuffix(r.URL.Path, f.PathSuffix) && f.Times >= 0 {
			fault = f
			if f.Times > 0 {
				if f.Times--; f.Times == 0 {
					f.Times = -1 // spent
				}
			}
			break
		}
	}
	s.mu.Unlock()
	if fault != nil {
		apiError(w, fault.Status, "backendError", fmt.Sprintf("injected fault: %s %s", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// AddImage adds an image (status READY and a self link unless set).
func (s *Server) AddImage(project string, img *compute.Image) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img.Kind = "compute#image"
	img.Id = s.id()
	img.SelfLink = selfLinkBase + "projects/" + project + "/global/images/" + img.Name
	if img.Status == "" {
		img.Status = "READY"
	}
	s.images[project+"/"+img.Name] = img
}

// AddInstance adds an instance as if it had been created (status RUNNING
// unless set), e.g. someone else's.
func (s *Server) AddInstance(project, zone string, in *compute.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fill(project, zone, in)
	if in.Status == "" {
		in.Status = "RUNNING"
	}
	s.instances[project+"/"+zone+"/"+in.Name] = &instance{inst: in}
}

// Fail adds a fault.
func (s *Server) Fail(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// InsertFailure makes the next insert operation end with these errors
// (code, message pairs), leaving the instance behind TERMINATED.
func (s *Server) InsertFailure(httpStatus int, codeMessage ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &compute.OperationError{}
	for i := 0; i+1 < len(codeMessage); i += 2 {
		e.Errors = append(e.Errors, &compute.OperationErrorErrors{Code: codeMessage[i], Message: codeMessage[i+1]})
	}
	s.insertErr, s.insertErrStatus = e, httpStatus
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Instance returns an instance as the API would, and the insert body that
// created it (nil for AddInstance).
func (s *Server) Instance(project, zone, name string) (in, inserted *compute.Instance, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.instances[project+"/"+zone+"/"+name]
	if i == nil {
		return nil, nil, false
	}
	return i.inst, i.created, true
}

// InstanceNames returns the names of all instances.
func (s *Server) InstanceNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, i := range s.instances {
		out = append(out, i.inst.Name)
	}
	slices.Sort(out)
	return out
}

// SigningKeys returns the public ECC and RSA attestation keys of an
// instance's vTPM.
func (s *Server) SigningKeys(project, zone, name string) (ecc, rsa crypto.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.instances[project+"/"+zone+"/"+name]
	if i == nil || i.ecc == nil {
		return nil, nil
	}
	return i.ecc.Public(), i.rsa.Public()
}

func (s *Server) id() uint64 { s.nextID++; return s.nextID }

func (s *Server) fill(project, zone string, in *compute.Instance) {
	in.Kind = "compute#instance"
	in.Id = s.id()
	in.Zone = selfLinkBase + "projects/" + project + "/zones/" + zone
	in.SelfLink = in.Zone + "/instances/" + in.Name
	in.CreationTimestamp = time.Now().Format("2006-01-02T15:04:05.000-07:00")
	if in.MachineType != "" && !strings.HasPrefix(in.MachineType, "https://") {
		in.MachineType = selfLinkBase + "projects/" + project + "/" + in.MachineType
	}
}

var (
	nameRe   = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	filterRe = regexp.MustCompile(`^labels\.([a-z][-_a-z0-9]{0,62}) *= *"?([-_a-z0-9]{0,63})"?$`)
	imageRe  = regexp.MustCompile(`^(?:https://www\.googleapis\.com/compute/v1/)?projects/([^/]+)/global/images/([^/]+)$`)
)

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	p, name := r.PathValue("project"), r.PathValue("image")
	s.mu.Lock()
	img := s.images[p+"/"+name]
	s.mu.Unlock()
	if img == nil {
		notFound(w, "projects/"+p+"/global/images/"+name)
		return
	}
	writeJSON(w, img)
}

func (s *Server) insert(w http.ResponseWriter, r *http.Request) {
	p, z := r.PathValue("project"), r.PathValue("zone")
	var in, created compute.Instance
	body, _ := io.ReadAll(r.Body)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		apiError(w, http.StatusBadRequest, "invalid", "Invalid JSON payload received. "+err.Error())
		return
	}
	json.Unmarshal(body, &created) // a deep copy, kept as sent
	s.mu.Lock()
	defer s.mu.Unlock()
	if rid := r.URL.Query().Get("requestId"); rid != "" && s.requestID[rid] != nil {
		writeJSON(w, s.requestID[rid].op)
		return
	}
	key := p + "/" + z + "/" + in.Name
	switch {
	case !nameRe.MatchString(in.Name):
		apiError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("Invalid value for field 'resource.name': '%s'.", in.Name))
		return
	case s.instances[key] != nil:
		apiError(w, http.StatusConflict, "alreadyExists", fmt.Sprintf("The resource 'projects/%s/zones/%s/instances/%s' already exists", p, z, in.Name))
		return
	case in.MachineType == "":
		apiError(w, http.StatusBadRequest, "invalid", "Invalid value for field 'resource.machineType': ''.")
		return
	case len(in.Disks) == 0 || in.Disks[0] == nil || !in.Disks[0].Boot || in.Disks[0].InitializeParams == nil:
		apiError(w, http.StatusBadRequest, "invalid", "Invalid value for field 'resource.disks': a boot disk is required.")
		return
	}
	m := imageRe.FindStringSubmatch(in.Disks[0].InitializeParams.SourceImage)
	var img *compute.Image
	if m != nil {
		img = s.images[m[1]+"/"+m[2]]
	}
	if img == nil {
		notFound(w, in.Disks[0].InitializeParams.SourceImage)
		return
	}
	features := map[string]bool{}
	for _, f := range img.GuestOsFeatures {
		features[f.Type] = true
	}
	if sc := in.ShieldedInstanceConfig; sc != nil && (sc.EnableSecureBoot || sc.EnableVtpm) && !features["UEFI_COMPATIBLE"] {
		apiError(w, http.StatusBadRequest, "invalid", "Invalid resource usage: 'Shielded VM features require an image with the UEFI_COMPATIBLE guest OS feature'.")
		return
	}
	if cc := in.ConfidentialInstanceConfig; cc != nil && cc.ConfidentialInstanceType != "" {
		if in.Scheduling == nil || in.Scheduling.OnHostMaintenance != "TERMINATE" {
			apiError(w, http.StatusBadRequest, "invalid", "Invalid value for field 'resource.scheduling.onHostMaintenance': confidential instances must TERMINATE on host maintenance.")
			return
		}
		if !features[cc.ConfidentialInstanceType+"_CAPABLE"] {
			apiError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("Invalid resource usage: 'The image must have the %s_CAPABLE guest OS feature'.", cc.ConfidentialInstanceType))
			return
		}
	}
	ecc, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "backendError", err.Error())
		return
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "backendError", err.Error())
		return
	}
	in.Disks[0].Source = selfLinkBase + "projects/" + p + "/zones/" + z + "/disks/" + in.Name
	in.Disks[0].DeviceName = "persistent-disk-0"
	in.Disks[0].InitializeParams = nil
	in.Status = "PROVISIONING"
	s.fill(p, z, &in)
	s.instances[key] = &instance{inst: &in, ecc: ecc, rsa: rk, created: &created}
	op := s.newOp(p, z, "insert", key, in.SelfLink)
	if s.insertErr != nil {
		op.fail, s.insertErr = s.insertErr, nil
		op.op.HttpErrorStatusCode = int64(s.insertErrStatus)
		op.op.HttpErrorMessage = http.StatusText(s.insertErrStatus)
	}
	if rid := r.URL.Query().Get("requestId"); rid != "" {
		s.requestID[rid] = op
	}
	writeJSON(w, op.op)
}

func (s *Server) newOp(p, z, typ, key, target string) *operation {
	id := s.id()
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("operation-%d-%s", time.Now().UnixMilli(), hex.EncodeToString(rnd[:]))
	zone := selfLinkBase + "projects/" + p + "/zones/" + z
	op := &operation{key: key, waitsLeft: s.OpWaits, op: &compute.Operation{
		Kind: "compute#operation", Id: id, Name: name, Zone: zone, OperationType: typ,
		TargetLink: target, TargetId: id, Status: "RUNNING", User: "gate@example.iam.gserviceaccount.com",
		Progress: 0, InsertTime: time.Now().Format(time.RFC3339), StartTime: time.Now().Format(time.RFC3339),
		SelfLink: zone + "/operations/" + name,
	}}
	s.ops[p+"/"+z+"/"+name] = op
	return op
}

// step advances an operation by one Wait.
func (s *Server) step(op *operation) {
	if op.op.Status == "DONE" {
		return
	}
	if op.waitsLeft > 0 {
		op.waitsLeft--
		op.op.Progress = 50
		return
	}
	op.op.Status, op.op.Progress, op.op.EndTime = "DONE", 100, time.Now().Format(time.RFC3339)
	in := s.instances[op.key]
	switch {
	case op.fail != nil:
		op.op.Error = op.fail
		if in != nil {
			in.inst.Status = "TERMINATED"
		}
	case op.op.OperationType == "insert" && in != nil:
		in.inst.Status = "RUNNING"
	case op.op.OperationType == "delete":
		delete(s.instances, op.key)
	}
}

func (s *Server) waitOp(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	op := s.ops[r.PathValue("project")+"/"+r.PathValue("zone")+"/"+r.PathValue("operation")]
	if op == nil {
		notFound(w, "projects/"+r.PathValue("project")+"/zones/"+r.PathValue("zone")+"/operations/"+r.PathValue("operation"))
		return
	}
	s.step(op)
	writeJSON(w, op.op)
}

func (s *Server) getOp(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	op := s.ops[r.PathValue("project")+"/"+r.PathValue("zone")+"/"+r.PathValue("operation")]
	if op == nil {
		notFound(w, "projects/"+r.PathValue("project")+"/zones/"+r.PathValue("zone")+"/operations/"+r.PathValue("operation"))
		return
	}
	writeJSON(w, op.op)
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (*instance, string) {
	p, z, name := r.PathValue("project"), r.PathValue("zone"), r.PathValue("instance")
	key := p + "/" + z + "/" + name
	in := s.instances[key]
	if in == nil {
		notFound(w, "projects/"+p+"/zones/"+z+"/instances/"+name)
	}
	return in, key
}

func (s *Server) getInstance(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, _ := s.lookup(w, r); in != nil {
		writeJSON(w, in.inst)
	}
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rid := r.URL.Query().Get("requestId"); rid != "" && s.requestID[rid] != nil {
		writeJSON(w, s.requestID[rid].op)
		return
	}
	in, key := s.lookup(w, r)
	if in == nil {
		return
	}
	in.inst.Status = "STOPPING"
	op := s.newOp(r.PathValue("project"), r.PathValue("zone"), "delete", key, in.inst.SelfLink)
	if rid := r.URL.Query().Get("requestId"); rid != "" {
		s.requestID[rid] = op
	}
	writeJSON(w, op.op)
}

func (s *Server) identity(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	in, _ := s.lookup(w, r)
	hook := s.Identity
	s.mu.Unlock()
	if in == nil {
		return
	}
	id := &compute.ShieldedInstanceIdentity{Kind: "compute#shieldedInstanceIdentity"}
	if in.ecc != nil {
		id.EccP256SigningKey = &compute.ShieldedInstanceIdentityEntry{EkPub: pemPublic(in.ecc.Public())}
		id.SigningKey = &compute.ShieldedInstanceIdentityEntry{EkPub: pemPublic(in.rsa.Public())}
	}
	if hook != nil {
		hook(in.inst.Name, id)
	}
	writeJSON(w, id)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	p, z := r.PathValue("project"), r.PathValue("zone")
	q := r.URL.Query()
	var key, value string
	if f := q.Get("filter"); f != "" {
		m := filterRe.FindStringSubmatch(f)
		if m == nil {
			apiError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("Invalid value for field 'filter': '%s'. Invalid list filter expression.", f))
			return
		}
		key, value = m[1], m[2]
	}
	size := s.PageSize
	if size <= 0 {
		size = 500
	}
	if mr, err := strconv.Atoi(q.Get("maxResults")); err == nil && mr > 0 && mr < size {
		size = mr
	}
	start := 0
	if tok := q.Get("pageToken"); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "page-"))
		if err != nil || !strings.HasPrefix(tok, "page-") || n < 0 {
			apiError(w, http.StatusBadRequest, "invalid", "Invalid value for field 'pageToken'.")
			return
		}
		start = n
	}
	s.mu.Lock()
	var all []*compute.Instance
	for k, in := range s.instances {
		if strings.HasPrefix(k, p+"/"+z+"/") && (key == "" || in.inst.Labels[key] == value) {
			all = append(all, in.inst)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b *compute.Instance) int { return strings.Compare(a.Name, b.Name) })
	resp := &compute.InstanceList{Kind: "compute#instanceList", Id: "projects/" + p + "/zones/" + z + "/instances",
		SelfLink: selfLinkBase + "projects/" + p + "/zones/" + z + "/instances"}
	if start < len(all) {
		end := min(start+size, len(all))
		resp.Items = all[start:end]
		if end < len(all) {
			resp.NextPageToken = "page-" + strconv.Itoa(end)
		}
	}
	writeJSON(w, resp)
}

// AccessToken is the token /token issues.
const AccessToken = "ya29.fake-access-token"

// token is an OAuth 2.0 token endpoint for service account keys whose
// token_uri points here: a JWT-bearer grant gets AccessToken. The
// assertion's signature is not checked.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || r.PostForm.Get("assertion") == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_grant","error_description":"Invalid grant: JWT-bearer assertion required."}`)
		return
	}
	writeJSON(w, map[string]any{"access_token": AccessToken, "token_type": "Bearer", "expires_in": 3599})
}

func pemPublic(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return ""
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "backendError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Write(b)
}

func notFound(w http.ResponseWriter, resource string) {
	apiError(w, http.StatusNotFound, "notFound", fmt.Sprintf("The resource '%s' was not found", resource))
}

// apiError writes an error as Google APIs do.
func apiError(w http.ResponseWriter, status int, reason, message string) {
	type item struct {
		Message string `json:"message"`
		Domain  string `json:"domain"`
		Reason  string `json:"reason"`
	}
	body := map[string]any{"error": map[string]any{
		"code": status, "message": message, "errors": []item{{Message: message, Domain: "global", Reason: reason}},
	}}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	w.Write(b)
}
