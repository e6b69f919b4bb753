package main

import (
	"encoding/json"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// started is when this kubelet started, the node's stats start time.
var started = metav1.NewTime(time.Now().Truncate(time.Second))

// serveRunningPods answers /runningpods/: no container runs here, so an empty PodList.
func serveRunningPods(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, &corev1.PodList{
		TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
		Items:    []corev1.Pod{},
	})
}

// serveSummary answers /stats/summary: the node, with no stats measured, and no pods.
func serveSummary(w http.ResponseWriter, _ *http.Request, nodeName string) {
	writeJSON(w, &statsv1alpha1.Summary{
		Node: statsv1alpha1.NodeStats{NodeName: nodeName, StartTime: started},
		Pods: []statsv1alpha1.PodStats{},
	})
}

func writeJSON(w http.ResponseWriter, value any) {
	body, err := json.Marshal(value)
	if err != nil {
		plainError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}
