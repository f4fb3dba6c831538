import CKernels
import Formats
import Tensors

/// The weight of a linear layer in the form the inference decoder multiplies by.
///
/// One case per storage format, one dispatch (`LinearLayer.apply`), a kernel per format: fp32
/// today; packed low-bit codes with scales join as a case of their own, and their kernels
/// beside the fp32 ones, without the decoder changing.
package enum LinearWeight {
    /// (out, in) fp32, row-major.
    case dense(Tensor)

    package var outFeatures: Int {
        switch self { case .dense(let w): w.shape[0] }
    }

    package var inFeatures: Int {
        switch self { case .dense(let w): w.shape[1] }
    }

    /// Bytes a forward reads from memory for the weight (what decoding is bound by).
    package var storageBytes: Int {
        switch self { case .dense(let w): w.count * MemoryLayout<Float>.size }
    }

    /// The weight as fp32 (out, in): the tensor itself for `.dense`, so writing into it changes
    /// the layer (PTQ writes its dequantized values there).
    package var dense: Tensor {
        switch self { case .dense(let w): w }
    }
}

/// A change of a linear layer's input rows before the product: an activation quantizer, an
/// online rotation. It works in place on the decoder's activation buffer, which only this
/// layer reads afterwards.
package protocol LinearInputTransform: AnyObject {
    /// x: (rows, width), row-major, transformed in place.
    func transform(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int)
}

/// Sees a linear layer's input rows (after its transforms, as the product sees them) or its
/// output rows. PTQ's calibration observes inputs; evaluations and probes can read outputs.
package typealias LinearHook = (_ rows: UnsafePointer<Float>, _ count: Int) -> Void

/// One linear layer of a block: its weight, optional bias, input transforms and hooks.
package final class LinearLayer {
    package var weight: LinearWeight
    package var bias: Tensor?                       // (out)
    package var inputTransforms: [any LinearInputTransform] = []
    package var inputHooks: [LinearHook] = []
    package var outputHooks: [LinearHook] = []

    /// Above this many rows the product goes to OpenBLAS's sgemm. On the 2-core VM of
    /// docs/PERFORMANCE.md the tiled kernel was faster at every size measured (2-4x at 128-2048
    /// prompt tokens; an eval of 32 GSM8K prompts, about 5k prefill rows at once, 2.3x), so only very
    /// long chunks go to sgemm.
    static let tiledGEMVMaxRows = 65_536

    package init(_ weight: LinearWeight, bias: Tensor? = nil) {
        self.weight = weight
        self.bias = bias
    }

    package convenience init(dense w: Tensor, bias: Tensor? = nil) { self.init(.dense(w), bias: bias) }

    /// y = T(x) W^T (+ b), or y += ... with `accumulate`, on the first n rows, T being the input
    /// transforms in order. x: (N, in), y: (N, out). x is transformed in place.
    func apply(_ n: Int, _ x: Tensor, into y: Tensor, accumulate: Bool = false) {
        prepareInput(n, x)
        multiply(n, x, into: y, accumulate: accumulate)
    }

    /// The input transforms, then the input hooks, on the first n rows of x (in place).
    func prepareInput(_ n: Int, _ x: Tensor) {
        for t in inputTransforms { t.transform(x.ptr, rows: n, width: weight.inFeatures) }
        for hook in inputHooks { hook(x.ptr, n) }
    }

    /// The product alone (x already prepared), then the bias and the output hooks, which see y
    /// as written: for an accumulating site, the residual stream after the addition.
    func multiply(_ n: Int, _ x: Tensor, into y: Tensor, accumulate: Bool = false) {
        let inF = weight.inFeatures, outF = weight.outFeatures
        switch weight {
        case .dense(let w):
            if n <= Self.tiledGEMVMaxRows {
                // Memory-bound: the gemv kernel streams W once for up to 8 rows of x, threads
                // splitting W's rows. More rows (batched decoding, prefill) go 8 at a time over
                // each tile of W while it is in cache; sgemm would pack all of W for every call,
                // which for a few dozen rows costs more than the product (4x slower at 32 rows).
                let maxRows = Int(RQAT_GEMV_MAX_ROWS)
                let tile = n <= maxRows ? outF : max(16, 65_536 / inF)
                Threads.parallelFor(outF) { rows in
                    var lo = rows.lowerBound
                    while lo < rows.upperBound {
                        let hi = min(lo + tile, rows.upperBound)
                        for first in stride(from: 0, to: n, by: maxRows) {
                            rqat_gemv_rows(x.ptr + first * inF, min(maxRows, n - first), inF, w.ptr, inF,
                                           y.ptr + first * outF, outF, accumulate ? 1 : 0, lo, hi)
                        }
                        lo = hi
                    }
                }
            } else {
                Gemm.sgemm(transB: true, m: n, n: outF, k: inF, a: x.ptr, lda: inF, b: w.ptr, ldb: inF,
                           beta: accumulate ? 1 : 0, c: y.ptr, ldc: outF)
            }
        }
        if let bias {
            for r in 0..<n { rqat_axpy(1, bias.ptr, y.row(r), outF) }
        }
        for hook in outputHooks { hook(y.ptr, n) }
    }
}
