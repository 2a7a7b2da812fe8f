// portway-cluster runs the real test control plane in one directory: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and the fake kubelet, on loopback.
//
//	portway-cluster up --dir DIR --bin BINDIR [--exit-with-parent]
//
// It starts the components, writes DIR/admin.kubeconfig and DIR/cluster.json (URLs, token,
// pids), touches DIR/ready, and supervises in the foreground: a component that dies (a test
// SIGKILLs kube-apiserver to restart it) is started again with the same flags and state.
// SIGTERM or SIGINT stops everything; with --exit-with-parent it also stops when the process
// that started it goes away, so a crashed test leaves nothing running.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"portway.dev/tests/cluster/kubelet"
)

// The address ranges match portway-sim's, so tests see the same shapes on both worlds.
const (
	serviceCIDRs = "10.43.0.0/16,fd00:43::/112"
	issuer       = "https://kubernetes.default.svc.cluster.local"
)

// kube-controller-manager runs its default set, as kubeadm and k3s do (node lifecycle
// included: it removes the not-ready taint the apiserver puts on new Nodes). No cloud
// controller is among them any more: Portway is the cloud controller.
var kcmControllers = []string{"*"}

type info struct {
	URL        string         `json:"url"`
	Kubeconfig string         `json:"kubeconfig"`
	Token      string         `json:"token"`
	CA         string         `json:"ca"`
	Etcd       string         `json:"etcd"`
	AuditLog   string         `json:"auditLog"`
	Version    string         `json:"version"`
	Pids       map[string]int `json:"pids"`
	Supervisor int            `json:"supervisor"`
}

type component struct {
	name string
	path string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if len(os.Args) < 2 || os.Args[1] != "up" {
		fmt.Fprintln(os.Stderr, "usage: portway-cluster up --dir DIR --bin BINDIR [--exit-with-parent]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (created)")
	bin := fs.String("bin", "", "directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
	withParent := fs.Bool("exit-with-parent", false, "stop when the parent process exits")
	listen := fs.String("listen", "127.0.0.1", "address kube-apiserver binds and advertises")
	_ = fs.Parse(os.Args[2:])
	if *dir == "" || *bin == "" {
		log.Fatal("--dir and --bin are required")
	}
	if err := up(*dir, *bin, *listen, *withParent); err != nil {
		log.Fatalf("portway-cluster: %v", err)
	}
}

func up(dir, bin, listen string, withParent bool) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, d := range []string{"pki", "etcd", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	_ = os.Remove(filepath.Join(dir, "ready"))
	pki := filepath.Join(dir, "pki")
	if err := writeKeyPair(filepath.Join(pki, "sa.key"), filepath.Join(pki, "sa.pub")); err != nil {
		return err
	}
	tokens := map[string]string{"admin": token(), "kcm": token(), "scheduler": token(), "kubelet": token()}
	csv := fmt.Sprintf("%s,admin,admin-uid,system:masters\n", tokens["admin"]) +
		fmt.Sprintf("%s,system:kube-controller-manager,kcm-uid,system:masters\n", tokens["kcm"]) +
		fmt.Sprintf("%s,system:kube-scheduler,scheduler-uid,system:masters\n", tokens["scheduler"]) +
		fmt.Sprintf("%s,system:node:fake-kubelet,kubelet-uid,system:masters\n", tokens["kubelet"])
	if err := os.WriteFile(filepath.Join(pki, "tokens.csv"), []byte(csv), 0o600); err != nil {
		return err
	}
	// Every write, with its user, so a test can count what each component wrote.
	policy := `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
`
	policyPath := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policyPath, []byte(policy), 0o600); err != nil {
		return err
	}
	auditLog := filepath.Join(dir, "audit.log")

	// A port chosen free can be taken before the component binds it (tests start control
	// planes side by side, and clients' outgoing connections use the same range): a
	// component that exits before it is ready is started again on new ports.
	var etcd, apiserver *component
	var apiURL, etcdURL string
	var started time.Time
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(3)
		if err != nil {
			return err
		}
		etcdURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		apiURL = fmt.Sprintf("https://%s", net.JoinHostPort(listen, strconv.Itoa(ports[2])))
		etcd = &component{name: "etcd", path: filepath.Join(bin, "etcd"), args: []string{
			"--name=default", "--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=default=" + peerURL, "--unsafe-no-fsync",
			"--log-level=warn", "--quota-backend-bytes=4294967296",
		}}
		apiserver = &component{name: "kube-apiserver", path: filepath.Join(bin, "kube-apiserver"), args: []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=" + listen, "--advertise-address=" + listen,
			fmt.Sprintf("--secure-port=%d", ports[2]),
			"--cert-dir=" + pki,
			"--token-auth-file=" + filepath.Join(pki, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-cluster-ip-range=" + serviceCIDRs,
			"--service-account-issuer=" + issuer,
			"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
			"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
			"--endpoint-reconciler-type=none",
			"--allow-privileged=true",
			"--audit-policy-file=" + policyPath,
			"--audit-log-path=" + auditLog,
			"--audit-log-format=json",
			"--audit-log-mode=blocking",
			"--audit-log-maxsize=0",
			"--profiling=false",
			"--v=1",
		}}
		if err := etcd.start(dir); err != nil {
			return err
		}
		err = waitHTTP(etcd, etcdURL+"/health", "", 60*time.Second)
		if err == nil {
			if err := apiserver.start(dir); err != nil {
				etcd.stop()
				return err
			}
			started = time.Now()
			err = waitHTTP(apiserver, apiURL+"/readyz", tokens["admin"], 120*time.Second)
		}
		if err == nil {
			break
		}
		apiserver.stop()
		etcd.stop()
		if !errors.Is(err, errExited) || attempt == 3 {
			return fmt.Errorf("%w (see %s)", err, filepath.Join(dir, "logs"))
		}
		log.Printf("%v; starting etcd and kube-apiserver again on new ports", err)
		// etcd's data directory remembers its peer URL: begin it afresh.
		if err := os.RemoveAll(filepath.Join(dir, "etcd")); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o700); err != nil {
			return err
		}
	}
	log.Printf("kube-apiserver ready in %v", time.Since(started).Round(time.Millisecond))
	ca, err := caOf(filepath.Join(pki, "apiserver.crt"))
	if err != nil {
		return err
	}
	caPath := filepath.Join(pki, "ca.crt")
	if err := os.WriteFile(caPath, ca, 0o600); err != nil {
		return err
	}
	kubeconfig := func(name, user string) (string, error) {
		path := filepath.Join(dir, name+".kubeconfig")
		return path, writeKubeconfig(path, apiURL, ca, user, tokens[user])
	}
	adminKC, err := kubeconfig("admin", "admin")
	if err != nil {
		return err
	}
	kcmKC, err := kubeconfig("kube-controller-manager", "kcm")
	if err != nil {
		return err
	}
	schedKC, err := kubeconfig("kube-scheduler", "scheduler")
	if err != nil {
		return err
	}
	kubeletKC, err := kubeconfig("kubelet", "kubelet")
	if err != nil {
		return err
	}
	kcm := &component{name: "kube-controller-manager", path: filepath.Join(bin, "kube-controller-manager"), args: []string{
		"--kubeconfig=" + kcmKC,
		"--controllers=" + strings.Join(kcmControllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--service-account-private-key-file=" + filepath.Join(pki, "sa.key"),
		"--root-ca-file=" + caPath,
		"--use-service-account-credentials=false",
		"--service-cluster-ip-range=" + serviceCIDRs,
		"--concurrent-gc-syncs=20",
		"--v=1",
	}}
	sched := &component{name: "kube-scheduler", path: filepath.Join(bin, "kube-scheduler"), args: []string{
		"--kubeconfig=" + schedKC,
		"--authentication-kubeconfig=" + schedKC,
		"--authorization-kubeconfig=" + schedKC,
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	}}
	components := []*component{etcd, apiserver, kcm, sched}
	for _, c := range components[2:] {
		if err := c.start(dir); err != nil {
			stopAll(components)
			return err
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeletKC)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	cfg.UserAgent = "fake-kubelet"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	go func() {
		if err := kubelet.Run(ctx, client); err != nil {
			log.Printf("fake kubelet: %v", err)
		}
	}()
	// Ready when the serviceaccount controller made the default ServiceAccount: pods can
	// then be created in "default", and kube-controller-manager is known to work.
	if err := waitFor(120*time.Second, func() bool {
		if kcm.exited() || sched.exited() {
			return true // fails below
		}
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	}); err != nil || kcm.exited() || sched.exited() {
		if err == nil {
			err = errors.New("a component exited while starting")
		}
		stopAll(components)
		return fmt.Errorf("kube-controller-manager made no default ServiceAccount: %w (see %s)", err, kcm.logPath(dir))
	}
	version, _ := client.Discovery().ServerVersion()
	gitVersion := ""
	if version != nil {
		gitVersion = version.GitVersion
	}
	writeInfo := func() error {
		pids := map[string]int{}
		for _, c := range components {
			pids[c.name] = c.pid()
		}
		data, _ := json.MarshalIndent(info{
			URL: apiURL, Kubeconfig: adminKC, Token: tokens["admin"], CA: caPath, Etcd: etcdURL,
			AuditLog: auditLog, Version: gitVersion, Pids: pids, Supervisor: os.Getpid(),
		}, "", "  ")
		tmp := filepath.Join(dir, "cluster.json.tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Join(dir, "cluster.json"))
	}
	if err := writeInfo(); err != nil {
		stopAll(components)
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(apiURL+"\n"), 0o600); err != nil {
		stopAll(components)
		return err
	}
	log.Printf("control plane %s ready at %s (kubeconfig %s)", gitVersion, apiURL, adminKC)

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	parent := os.Getppid()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-signals:
			log.Printf("%v: stopping", s)
			cancel()
			stopAll(components)
			return nil
		case <-tick.C:
			if withParent && os.Getppid() != parent {
				log.Printf("parent %d exited: stopping", parent)
				cancel()
				stopAll(components)
				return nil
			}
			restarted := false
			for _, c := range components {
				if c.exited() {
					log.Printf("%s exited: starting it again", c.name)
					if err := c.start(dir); err != nil {
						log.Printf("%s: %v", c.name, err)
					}
					restarted = true
				}
			}
			if restarted {
				if err := writeInfo(); err != nil {
					log.Printf("cluster.json: %v", err)
				}
			}
		}
	}
}

func (c *component) logPath(dir string) string {
	return filepath.Join(dir, "logs", c.name+".log")
}

func (c *component) start(dir string) error {
	out, err := os.OpenFile(c.logPath(dir), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.path, c.args...)
	cmd.Stdout, cmd.Stderr = out, out
	// The kernel kills the component if this supervisor dies, however it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("starting %s: %w", c.name, err)
	}
	c.mu.Lock()
	c.cmd = cmd
	c.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		out.Close()
	}()
	return nil
}

func (c *component) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *component) exited() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd != nil && c.cmd.ProcessState != nil
}

func (c *component) stop() {
	c.mu.Lock()
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cmd.ProcessState != nil || cmd.Process.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
}

func stopAll(cs []*component) {
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i].stop()
	}
}

func freePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func token() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeKeyPair(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

// caOf returns the CA certificate of the apiserver's self-signed chain (serving certificate
// first, then the CA that signed it).
func caOf(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var last []byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		if cert.IsCA {
			last = pem.EncodeToMemory(block)
		}
	}
	if last == nil {
		return nil, errors.New("no CA certificate in " + path)
	}
	return last, nil
}

func writeKubeconfig(path, url string, ca []byte, user, tok string) error {
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: portway-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: portway-test
  context:
    cluster: portway-test
    user: %s
current-context: portway-test
`, url, b64(ca), user, tok, user)
	return os.WriteFile(path, []byte(text), 0o600)
}

// errExited: the component exited before it was ready (a port taken, say).
var errExited = errors.New("exited before it was ready")

// waitHTTP waits for url to answer 200, and gives up at once if c exited.
func waitHTTP(c *component, url, bearer string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: insecureLoopback()}
	exited := false
	err := waitFor(timeout, func() bool {
		if c.exited() {
			exited = true
			return true
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if exited {
		return fmt.Errorf("%s: %w", c.name, errExited)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

func waitFor(timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v", timeout)
}
