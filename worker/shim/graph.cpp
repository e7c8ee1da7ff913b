// CUDA graphs of a training step, for the worker's `train.cuda_graph`.
//
// Built by worker/build.rs as its own shared library (libcrossfold_graph.so),
// linked against libtorch_cuda, and embedded in the worker binary; the
// worker loads it at run time only where libtorch's CUDA backend loaded (see
// src/graph.rs), so the binary still starts on CPU-only installs.
//
// A `Graph` owns a side stream and a CUDAGraph. The caller enters the side
// stream (every CUDA op of the thread then goes there), runs warm-up steps
// eagerly, captures one step between capture_begin and capture_end, replays
// it once per later step, and leaves the stream at the end. Capture is
// thread-local (cudaStreamCaptureModeThreadLocal): jobs on other threads of
// the process may allocate and synchronise while this one captures.
//
// Every function catches C++ exceptions, keeps the message for
// crossfold_graph_last_error() and returns -1 (null for _new).
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <torch/headeronly/version.h>

#include <memory>
#include <optional>
#include <string>

// `discard` below relies on how CUDAGraph releases its pool in this
// version (only after a capture that ended); another version may release it
// itself, and a second release would abort the process. build.rs then
// leaves graphs out of the worker, saying why.
#if !(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 11)
#error "shim/graph.cpp is written against libtorch 2.11's CUDAGraph"
#endif

static thread_local std::string last_error;

namespace {
struct Graph {
  c10::DeviceIndex device;
  c10::cuda::CUDAStream stream;
  // The memory pool the capture allocates from (named here so that a
  // failed capture can hand it back: see discard).
  c10::MempoolId_t pool;
  std::optional<c10::cuda::CUDAStreamGuard> guard;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  bool began = false;
  bool capturing = false;
  bool captured = false;
};

Graph &graph(void *g) { return *static_cast<Graph *>(g); }

// Drop a graph whose capture failed (in capture_begin, in the step, or in
// capture_end). When cudaStreamBeginCapture or cudaStreamEndCapture fails,
// CUDAGraph leaves the caching allocators routing this stream to the
// graph's pool, and its destructor releases the pool only after a capture
// that ended: both are undone here, once. (`pool()` throws unless the
// capture ended, in which case the destructor releases the pool itself.)
void discard(Graph &s) {
  s.capturing = false;
  s.captured = false;
  if (!s.graph) return;
  bool ended = false;
  try {
    s.graph->pool();
    ended = true;
  } catch (...) {
  }
  if (!ended) {
    // Each may already be undone, or never done, depending on where the
    // capture failed: what does not apply throws, and is ignored.
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(s.device, s.pool);
    } catch (...) {
    }
    try {
      at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(s.pool);
    } catch (...) {
    }
    try {
      c10::cuda::CUDACachingAllocator::releasePool(s.device, s.pool);
    } catch (...) {
    }
    try {
      at::getHostAllocator(at::kCUDA)->release_pool(s.pool);
    } catch (...) {
    }
  }
  s.graph.reset();
}

// Take the side stream out of capture mode if a failure left it there
// (the recorded work is dropped), and clear the error that left behind.
void end_stream_capture(Graph &s) {
  cudaStreamCaptureStatus status;
  if (cudaStreamIsCapturing(s.stream.stream(), &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t dropped = nullptr;
    if (cudaStreamEndCapture(s.stream.stream(), &dropped) == cudaSuccess && dropped) {
      cudaGraphDestroy(dropped);
    }
  }
  (void)cudaGetLastError();
}

// Run `f` (returning 0 or -1), turning a C++ exception into -1 with its
// message kept for crossfold_graph_last_error().
template <class F>
int guarded(F &&f) {
  try {
    return f();
  } catch (const std::exception &e) {
    last_error = e.what();
    return -1;
  }
}

// Both of the above, for a capture that failed anywhere.
void abandon(Graph &s) {
  try {
    discard(s);
  } catch (...) {
  }
  try {
    end_stream_capture(s);
  } catch (...) {
  }
}
}  // namespace

extern "C" {

const char *crossfold_graph_last_error() { return last_error.c_str(); }

// A graph for CUDA device `device`, with a side stream from libtorch's pool.
void *crossfold_graph_new(int device) {
  try {
    auto index = static_cast<c10::DeviceIndex>(device);
    auto stream = c10::cuda::getStreamFromPool(false, index);
    return new Graph{index, stream, at::cuda::graph_pool_handle(), std::nullopt, nullptr};
  } catch (const std::exception &e) {
    last_error = e.what();
    return nullptr;
  }
}

// Make the side stream this thread's current stream (and its device the
// current device), after the work queued on the thread's current stream
// there (the job's images and weights) has finished. An event, not a
// device-wide synchronisation, which would break another job's capture on
// the same GPU.
int crossfold_graph_enter(void *g) {
  return guarded([&] {
    Graph &s = graph(g);
    if (s.guard) return 0;
    c10::cuda::CUDAEvent written;
    written.record(c10::cuda::getCurrentCUDAStream(s.device));
    written.block(s.stream);
    s.guard.emplace(s.stream);
    return 0;
  });
}

// Start capturing the ops this thread queues on the side stream.
int crossfold_graph_capture_begin(void *g) {
  try {
    Graph &s = graph(g);
    if (!s.guard) {
      last_error = "capture_begin outside the graph's stream";
      return -1;
    }
    if (s.began) {
      // One capture per Graph: its pool id is never reused.
      last_error = "a graph is captured once";
      return -1;
    }
    s.began = true;
    s.graph = std::make_unique<at::cuda::CUDAGraph>();
    s.graph->capture_begin(s.pool, cudaStreamCaptureModeThreadLocal);
    s.capturing = true;
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    // Undo whatever capture_begin did before it failed.
    abandon(graph(g));
    return -1;
  }
}

// End the capture and instantiate the graph. Also the way out of a capture
// that failed half-way: the capture is ended and the graph dropped.
int crossfold_graph_capture_end(void *g) {
  Graph &s = graph(g);
  if (!s.capturing) {
    last_error = "capture_end without capture_begin";
    return -1;
  }
  s.capturing = false;
  try {
    s.graph->capture_end();
    s.captured = true;
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    abandon(s);
    return -1;
  }
}

// Launch the captured step on the side stream.
int crossfold_graph_replay(void *g) {
  return guarded([&] {
    Graph &s = graph(g);
    if (!s.captured) {
      last_error = "replay before a capture";
      return -1;
    }
    s.graph->replay();
    return 0;
  });
}

// Wait for the side stream and make the previous stream current again.
int crossfold_graph_leave(void *g) {
  return guarded([&] {
    Graph &s = graph(g);
    if (!s.guard) return 0;
    s.stream.synchronize();
    s.guard.reset();
    return 0;
  });
}

// Free the graph (its memory pool goes back to libtorch's allocator).
void crossfold_graph_free(void *g) {
  if (g == nullptr) return;
  Graph *s = static_cast<Graph *>(g);
  if (s->capturing) {
    // Dropped in the middle of a capture (the step failed or panicked).
    abandon(*s);
  }
  try {
    if (s->guard) {
      s->stream.synchronize();
      s->guard.reset();
    }
  } catch (...) {
  }
  try {
    s->graph.reset();
  } catch (...) {
  }
  delete s;
}
}
