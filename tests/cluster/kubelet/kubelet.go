// Package kubelet is the test control plane's fake kubelet: what a node's kubelet does that
// Portway and the Kubernetes controllers can see, without containers.
//
// It manages every Node of the cluster (there is no real kubelet here):
//   - pods bound to a node (by the real kube-scheduler) become Running and Ready, with
//     hostIP, podIP (the node's address for hostNetwork pods, otherwise one from the node's
//     10.42.N.0/24), and container statuses, as kubelet's status manager reports them;
//   - pods being deleted are finalized (deleted with grace period 0, uid precondition), as
//     kubelet does once their containers stopped;
//   - node Leases in kube-node-lease are renewed every 10 s, and the Ready condition's
//     lastHeartbeatTime every 60 s, keeping its status: a test that turns a node NotReady
//     (as a kubelet that lost its runtime would report) is not overwritten.
//
// Nodes are registered by the tests, the way a kubelet with --cloud-provider=external
// registers them (the uninitialized taint, alpha.kubernetes.io/provided-node-ip).
package kubelet

import (
	"context"
	"fmt"
	"log"
	"net"
	"sort"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Kubelet is the fake kubelet of every node.
type Kubelet struct {
	client kubernetes.Interface
	pods   cache.Indexer
	nodes  cache.Indexer
	queue  workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	subnets map[string]int // node name -> N of 10.42.N.0/24
	next    map[string]int // node name -> last host number handed out
}

// Run serves until ctx ends.
func Run(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactory(client, 0)
	podInformer := factory.Core().V1().Pods().Informer()
	nodeInformer := factory.Core().V1().Nodes().Informer()
	k := &Kubelet{
		client:  client,
		pods:    podInformer.GetIndexer(),
		nodes:   nodeInformer.GetIndexer(),
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		subnets: map[string]int{},
		next:    map[string]int{},
	}
	enqueue := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj interface{}) { enqueue(obj) },
	}); err != nil {
		return err
	}
	// A node that gets its address late (kubelet's --node-ip added) lets its pods start.
	if _, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		// A registering kubelet takes its Lease at once.
		AddFunc: func(obj interface{}) {
			go k.renewLease(ctx, obj.(*corev1.Node).Name)
		},
		UpdateFunc: func(_, obj interface{}) {
			node := obj.(*corev1.Node)
			for _, p := range k.pods.List() {
				if pod := p.(*corev1.Pod); pod.Spec.NodeName == node.Name {
					enqueue(pod)
				}
			}
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	go k.heartbeats(ctx)
	go func() {
		<-ctx.Done()
		k.queue.ShutDown()
	}()
	for i := 0; i < 4; i++ {
		go k.worker(ctx)
	}
	<-ctx.Done()
	return nil
}

func (k *Kubelet) worker(ctx context.Context) {
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		if err := k.syncPod(ctx, key); err != nil {
			log.Printf("fake-kubelet: pod %s: %v", key, err)
			k.queue.AddRateLimited(key)
		} else {
			k.queue.Forget(key)
		}
		k.queue.Done(key)
	}
}

func (k *Kubelet) syncPod(ctx context.Context, key string) error {
	obj, exists, err := k.pods.GetByKey(key)
	if err != nil || !exists {
		return err
	}
	pod := obj.(*corev1.Pod)
	if pod.Spec.NodeName == "" {
		return nil
	}
	if pod.DeletionTimestamp != nil {
		// Containers stopped: kubelet deletes the pod for good, guarded by its uid.
		zero := int64(0)
		uid := pod.UID
		err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero,
			Preconditions:      &metav1.Preconditions{UID: &uid},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	nodeObj, exists, err := k.nodes.GetByKey(pod.Spec.NodeName)
	if err != nil || !exists {
		return err
	}
	node := nodeObj.(*corev1.Node)
	hostIPs := nodeIPs(node)
	if len(hostIPs) == 0 {
		// kubelet cannot start a pod before it knows its node's address.
		return nil
	}
	podIPs := hostIPs
	if !pod.Spec.HostNetwork {
		podIPs = []string{k.allocate(node.Name)}
	}
	now := metav1.Now()
	status := pod.Status.DeepCopy()
	status.Phase = corev1.PodRunning
	status.HostIP = hostIPs[0]
	status.HostIPs = nil
	for _, ip := range hostIPs {
		status.HostIPs = append(status.HostIPs, corev1.HostIP{IP: ip})
	}
	status.PodIP = podIPs[0]
	status.PodIPs = nil
	for _, ip := range podIPs {
		status.PodIPs = append(status.PodIPs, corev1.PodIP{IP: ip})
	}
	status.StartTime = &now
	// The API server sets the QoS class when the pod is created, from its resources
	// (Burstable for a pod with requests), and refuses any change: keep it.
	if status.QOSClass == "" {
		status.QOSClass = corev1.PodQOSBestEffort
	}
	status.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled} {
		status.Conditions = append(status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		status.ContainerStatuses = append(status.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     "fake://" + c.Image,
			ContainerID: fmt.Sprintf("fake://%s-%s", pod.UID, c.Name),
			Ready:       true,
			Started:     ptr(true),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	updated := pod.DeepCopy()
	updated.Status = *status
	_, err = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		// A newer copy is on its way through the informer.
		return nil
	}
	return err
}

func ptr[T any](v T) *T { return &v }

// nodeIPs are the node's InternalIPs, as kubelet's hostIPs: the first of each family.
func nodeIPs(node *corev1.Node) []string {
	var out []string
	seen := map[bool]bool{}
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip := net.ParseIP(a.Address)
		if ip == nil {
			continue
		}
		v4 := ip.To4() != nil
		if !seen[v4] {
			seen[v4] = true
			out = append(out, a.Address)
		}
	}
	return out
}

// allocate hands out the next pod address of a node's 10.42.N.0/24.
func (k *Kubelet) allocate(node string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	subnet, ok := k.subnets[node]
	if !ok {
		subnet = len(k.subnets) % 256
		k.subnets[node] = subnet
	}
	k.next[node] = k.next[node]%253 + 1
	return fmt.Sprintf("10.42.%d.%d", subnet, k.next[node]+1)
}

// heartbeats renews every node's Lease each 10 s and its Ready condition's heartbeat each
// 60 s (kubelet's nodeLeaseDurationSeconds 40 with renewal at a quarter, and a status
// report that only refreshes the time).
func (k *Kubelet) heartbeats(ctx context.Context) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	round := 0
	for {
		names := []string{}
		for _, n := range k.nodes.ListKeys() {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			k.renewLease(ctx, name)
			if round%6 == 5 {
				k.heartbeatStatus(ctx, name)
			}
		}
		round++
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (k *Kubelet) renewLease(ctx context.Context, node string) {
	leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		nodeObj, exists, _ := k.nodes.GetByKey(node)
		if !exists {
			return
		}
		n := nodeObj.(*corev1.Node)
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: node,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr(node),
				LeaseDurationSeconds: ptr(int32(40)),
				RenewTime:            &now,
			},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) && ctx.Err() == nil {
			log.Printf("fake-kubelet: lease %s: %v", node, err)
		}
		return
	}
	if err != nil {
		return
	}
	lease.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) && ctx.Err() == nil {
		log.Printf("fake-kubelet: lease %s: %v", node, err)
	}
}

func (k *Kubelet) heartbeatStatus(ctx context.Context, node string) {
	nodeObj, exists, _ := k.nodes.GetByKey(node)
	if !exists {
		return
	}
	n := nodeObj.(*corev1.Node)
	hasReady := false
	for _, c := range n.Status.Conditions {
		hasReady = hasReady || c.Type == corev1.NodeReady
	}
	if !hasReady {
		return
	}
	now := time.Now().UTC().Format(time.RFC3339)
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","lastHeartbeatTime":%q}]}}`, now)
	_, err := k.client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		log.Printf("fake-kubelet: node status %s: %v", node, err)
	}
}
