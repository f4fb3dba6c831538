import Tensors

/// A fake-quantizer for quantization-aware training: it maps a decoder-block linear weight
/// (q, k, v, o, gate, up, down projections; never the embedding, LM head or norms) to the
/// values the forward pass uses, and carries the weight gradient back through that mapping.
///
/// Set it with `TrainableDecoder.weightQuantizer`. The decoder then
/// - fills its copies of the quantized weights by calling `forwardWeight(of:into:)` for each
///   linear weight on the first forward, and again only when `generation` has changed since the
///   last fill (so a step of several micro-batches quantizes once: the trainer calls `refresh()`
///   after each optimizer step, which must change `generation`);
/// - in backward, computes dL/dW_q (the gradient with respect to the quantized weight) into a
///   scratch buffer and calls `backward(of:dQuantized:)`, which must ADD dL/dW into `p.grad` and
///   the gradients of the quantizer's own `parameters` (step sizes, zero points) into theirs.
///
/// Between `refresh()` and backward the weights must not change (the optimizer steps after
/// backward, then the trainer refreshes), so backward may recompute codes from `p.value`.
/// The quantizer's `parameters` are not in `TrainableDecoder.parameters`: the caller gives
/// both lists to its optimizer (and checkpoints).
package protocol TrainingWeightQuantizer: AnyObject {
    /// Writes the fake-quantized values of `p` (same shape, row-major) into `out`.
    func forwardWeight(of p: Parameter, into out: UnsafeMutablePointer<Float>)
    /// Given dL/dW_q for `p` (same shape), adds dL/dW into `p.grad` and the gradients of the
    /// quantizer's own parameters into their `grad`.
    func backward(of p: Parameter, dQuantized: UnsafePointer<Float>)
    /// Learnable quantizer state (step sizes / zero points); empty when nothing is learned.
    var parameters: [Parameter] { get }
    /// Called after every optimizer step: re-derives whatever depends on the weights or on the
    /// quantizer's parameters, and changes `generation`.
    func refresh()
    /// Changes whenever the quantized weights may have changed (at least at every `refresh()`).
    var generation: Int { get }
}
