// oneDNN convolutions as XLA FFI custom calls, for training on CPU (models/onednn.py).
//
// Arrays cross the boundary in XLA's layouts: images NHWC, kernels HWIO (flax's, with the
// groups' output channels side by side). A pass computes on the NHWC arrays in place where
// oneDNN has a JIT kernel for that layout (depthwise ones, and brgemm for most others);
// otherwise each call reorders its operands into channel-blocked scratch buffers and its
// result back. The buffers come from a pool: fresh multi-megabyte allocations page-fault on
// every touch, which cost more than the convolution itself.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

enum class Pass { kForward, kInputGrad, kKernelGrad };

// The engine and the caches below are never destroyed: no static destructor can then run
// while an XLA thread is still inside a call at exit.
dnnl::engine& Engine() {
  static auto* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

struct Geometry {
  memory::dims image, kernel, output, strides, dilation, pad_lo, pad_hi;
  Tag kernel_tag;

  std::string Key(Pass pass) const {
    std::string key = std::to_string(static_cast<int>(pass));
    for (const memory::dims* d :
         {&image, &kernel, &output, &strides, &dilation, &pad_lo, &pad_hi}) {
      key += '|';
      for (int64_t v : *d) key += std::to_string(v) + ',';
    }
    return key;
  }
};

// The primitive of one pass and geometry, and the layouts it computes in.
struct Plan {
  dnnl::primitive primitive;
  memory::desc image, kernel, output;  // NHWC where oneDNN computes in place, else blocked
  memory::desc scratchpad;
};

// The pass with images and outputs in layout `image_tag` (Tag::any: oneDNN's choice) and
// the name of oneDNN's implementation of it.
std::pair<Plan, std::string> MakePlan(Pass pass, const Geometry& g, Tag image_tag) {
  auto& engine = Engine();
  const memory::desc image(g.image, memory::data_type::f32, image_tag),
      output(g.output, memory::data_type::f32, image_tag),
      kernel(g.kernel, memory::data_type::f32, Tag::any);
  // XLA runs independent custom calls on several threads at once, and oneDNN's own
  // scratchpad is shared between them: each call brings its own instead.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, image,
      kernel, output, g.strides, g.dilation, g.pad_lo, g.pad_hi, attr);
  switch (pass) {
    case Pass::kForward:
      return {{dnnl::convolution_forward(forward), forward.src_desc(),
               forward.weights_desc(), forward.dst_desc(), forward.scratchpad_desc()},
              forward.impl_info_str()};
    case Pass::kInputGrad: {
      dnnl::convolution_backward_data::primitive_desc pd(
          engine, dnnl::algorithm::convolution_direct, image, kernel, output, g.strides,
          g.dilation, g.pad_lo, g.pad_hi, forward, attr);
      return {{dnnl::convolution_backward_data(pd), pd.diff_src_desc(), pd.weights_desc(),
               pd.diff_dst_desc(), pd.scratchpad_desc()},
              pd.impl_info_str()};
    }
    case Pass::kKernelGrad: {
      dnnl::convolution_backward_weights::primitive_desc pd(
          engine, dnnl::algorithm::convolution_direct, image, kernel, output, g.strides,
          g.dilation, g.pad_lo, g.pad_hi, forward, attr);
      return {{dnnl::convolution_backward_weights(pd), pd.src_desc(), pd.diff_weights_desc(),
               pd.diff_dst_desc(), pd.scratchpad_desc()},
              pd.impl_info_str()};
    }
  }
  std::abort();
}

// NHWC in place where oneDNN has a JIT kernel for it (measured: depthwise passes 2x faster
// than in blocked layouts, the others as fast, and no copies); its other NHWC
// implementations (im2col + GEMM, reference loops) are 2-10x slower than reordering.
Plan MakePlan(Pass pass, const Geometry& g) {
  try {
    auto [plan, impl] = MakePlan(pass, g, Tag::nhwc);
    if (impl.find("gemm:") == std::string::npos && impl.find("ref") == std::string::npos) {
      return plan;
    }
  } catch (const dnnl::error&) {
    // No NHWC implementation at all: blocked below.
  }
  return MakePlan(pass, g, Tag::any).first;
}

class PlanCache {
 public:
  const Plan& Get(Pass pass, const Geometry& g) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string key = g.Key(pass);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    // Each search builds new networks; oneDNN keeps its own cache of compiled kernels.
    if (plans_.size() >= 512) plans_.clear();
    return plans_.emplace(key, MakePlan(pass, g)).first->second;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, Plan> plans_;
};

// Reusable 64-byte-aligned buffers, at most kMaxPooledBytes of them idle at a time.
class BufferPool {
 public:
  void* Take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = idle_.find(bytes);
      if (it != idle_.end()) {
        void* p = it->second;
        idle_.erase(it);
        idle_bytes_ -= bytes;
        return p;
      }
    }
    return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  }

  void Give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_bytes_ + bytes > kMaxPooledBytes) {
      for (auto& [size, q] : idle_) std::free(q);
      idle_.clear();
      idle_bytes_ = 0;
    }
    idle_.emplace(bytes, p);
    idle_bytes_ += bytes;
  }

 private:
  static constexpr size_t kMaxPooledBytes = size_t{1} << 30;
  std::mutex mutex_;
  std::multimap<size_t, void*> idle_;
  size_t idle_bytes_ = 0;
};

PlanCache& Plans() {
  static auto* plans = new PlanCache();
  return *plans;
}

BufferPool& Pool() {
  static auto* pool = new BufferPool();
  return *pool;
}

// A buffer from the pool in layout `desc`, returned to it on destruction.
class Pooled {
 public:
  explicit Pooled(const memory::desc& desc) : bytes_(desc.get_size()) {
    data_ = bytes_ ? Pool().Take(bytes_) : nullptr;
    memory_ = memory(desc, Engine(), data_);
  }
  ~Pooled() {
    if (data_) Pool().Give(data_, bytes_);
  }
  Pooled(const Pooled&) = delete;
  Pooled& operator=(const Pooled&) = delete;
  const memory& get() const { return memory_; }

 private:
  size_t bytes_;
  void* data_;
  memory memory_;
};

// An XLA array seen through oneDNN's layout `want`: the array itself when the layouts
// agree, else a pooled buffer, filled from the array when `copy_in`.
class Operand {
 public:
  Operand(void* data, const memory::desc& plain, const memory::desc& want, bool copy_in,
          dnnl::stream& stream)
      : plain_(plain, Engine(), data) {
    if (want == plain) {
      view_ = plain_;
      return;
    }
    blocked_ = std::make_unique<Pooled>(want);
    view_ = blocked_->get();
    if (copy_in) dnnl::reorder(plain_, view_).execute(stream, plain_, view_);
  }
  const memory& view() const { return view_; }
  void CopyOut(dnnl::stream& stream) {
    if (blocked_) dnnl::reorder(view_, plain_).execute(stream, view_, plain_);
  }

 private:
  memory plain_, view_;  // handles: view_ is plain_ or the blocked buffer's
  std::unique_ptr<Pooled> blocked_;
};

ffi::Error Run(Pass pass, float* image, float* kernel, float* output,
               ffi::Span<const int64_t> image_dims, ffi::Span<const int64_t> kernel_dims,
               ffi::Span<const int64_t> output_dims, ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> padding,
               int64_t groups) {
  if (image_dims.size() != 4 || kernel_dims.size() != 4 || output_dims.size() != 4 ||
      strides.size() != 2 || dilation.size() != 2 || padding.size() != 4 || groups < 1) {
    return ffi::Error::InvalidArgument("onednn conv: expects NHWC images, HWIO kernels, "
                                       "2 strides, 2 dilations, 4 paddings");
  }
  const int64_t kh = kernel_dims[0], kw = kernel_dims[1], in_per_group = kernel_dims[2],
                out = kernel_dims[3];
  Geometry g;
  g.image = {image_dims[0], image_dims[3], image_dims[1], image_dims[2]};
  g.output = {output_dims[0], output_dims[3], output_dims[1], output_dims[2]};
  if (groups == 1) {
    g.kernel = {out, in_per_group, kh, kw};
    g.kernel_tag = Tag::hwio;
  } else {
    g.kernel = {groups, out / groups, in_per_group, kh, kw};
    g.kernel_tag = Tag::hwigo;
  }
  g.strides = {strides[0], strides[1]};
  g.dilation = {dilation[0] - 1, dilation[1] - 1};  // oneDNN counts the gaps
  g.pad_lo = {padding[0], padding[2]};
  g.pad_hi = {padding[1], padding[3]};

  const Plan* plan;
  try {
    plan = &Plans().Get(pass, g);
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn conv: ") + e.what());
  }
  auto plain = [](const memory::dims& d, Tag tag) {
    return memory::desc(d, memory::data_type::f32, tag);
  };
  dnnl::stream stream(Engine());
  Operand x(image, plain(g.image, Tag::nhwc), plan->image, pass != Pass::kInputGrad, stream);
  Operand w(kernel, plain(g.kernel, g.kernel_tag), plan->kernel, pass != Pass::kKernelGrad,
            stream);
  Operand y(output, plain(g.output, Tag::nhwc), plan->output, pass != Pass::kForward, stream);
  Pooled scratchpad(plan->scratchpad);
  // oneDNN's argument names of the image, kernel and output in each pass.
  static constexpr int kArgs[3][3] = {
      {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
      {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST},
      {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST}};
  const int* args = kArgs[static_cast<int>(pass)];
  plan->primitive.execute(stream, {{args[0], x.view()},
                                   {args[1], w.view()},
                                   {args[2], y.view()},
                                   {DNNL_ARG_SCRATCHPAD, scratchpad.get()}});
  Operand& result = pass == Pass::kForward ? y : pass == Pass::kInputGrad ? x : w;
  result.CopyOut(stream);
  stream.wait();
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;
using Ints = ffi::Span<const int64_t>;

ffi::Error Forward(F32 x, F32 w, Out y, Ints strides, Ints dilation, Ints padding,
                   int64_t groups) {
  return Run(Pass::kForward, x.typed_data(), w.typed_data(), y->typed_data(), x.dimensions(),
             w.dimensions(), y->dimensions(), strides, dilation, padding, groups);
}

ffi::Error InputGrad(F32 dy, F32 w, Out dx, Ints strides, Ints dilation, Ints padding,
                     int64_t groups) {
  return Run(Pass::kInputGrad, dx->typed_data(), w.typed_data(), dy.typed_data(),
             dx->dimensions(), w.dimensions(), dy.dimensions(), strides, dilation, padding,
             groups);
}

ffi::Error KernelGrad(F32 x, F32 dy, Out dw, Ints strides, Ints dilation, Ints padding,
                      int64_t groups) {
  return Run(Pass::kKernelGrad, x.typed_data(), dw->typed_data(), dy.typed_data(),
             x.dimensions(), dw->dimensions(), dy.dimensions(), strides, dilation, padding,
             groups);
}

// The three passes share one signature: two arrays in, one out, the convolution's attributes.
auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<F32>()
      .Arg<F32>()
      .Ret<F32>()
      .Attr<Ints>("strides")
      .Attr<Ints>("dilation")
      .Attr<Ints>("padding")
      .Attr<int64_t>("groups");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MednasConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MednasConvInputGrad, InputGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MednasConvKernelGrad, KernelGrad, Binding());
