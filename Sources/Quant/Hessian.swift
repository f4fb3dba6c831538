import Foundation
import Tensors

/// The GPTQ proxy Hessian of one linear layer: H = 2/n · Σ x xᵀ over the n input rows x seen
/// during calibration (x is the layer's input, width = in features).
///
/// Kept as a running average so batches can arrive in any sizes: on each `add`,
/// H ← H · n_old/n_new + 2/n_new · XᵀX (XᵀX of the batch by one fp32 GEMM, the running sum in
/// Double). Layers that read the same input (q/k/v projections, gate/up) share one `Hessian`:
/// pass the same object to each `GPTQ.quantize` call — quantization never modifies it.
package final class Hessian {
    /// In features (H is dim × dim).
    package let dim: Int
    /// Activation rows accumulated so far.
    package private(set) var samples: Int = 0
    /// Row-major dim × dim, symmetric.
    package private(set) var matrix: [Double]
    private var scratch: [Float] = []

    package init(dim: Int) {
        precondition(dim > 0, "Hessian dimension must be positive")
        self.dim = dim
        matrix = [Double](repeating: 0, count: dim * dim)
    }

    /// A fixed Hessian (tests, or one computed elsewhere): `h` is (dim, dim).
    package init(matrix h: Tensor, samples: Int = 1) {
        precondition(h.rank == 2 && h.shape[0] == h.shape[1], "Hessian must be square, got \(h.shape)")
        dim = h.shape[0]
        matrix = h.buffer.map(Double.init)
        self.samples = samples
    }

    /// Accumulates `count` activation rows, each `dim` floats, contiguous.
    package func add(rows: UnsafePointer<Float>, count: Int) {
        guard count > 0 else { return }
        if scratch.isEmpty { scratch = [Float](repeating: 0, count: dim * dim) }
        scratch.withUnsafeMutableBufferPointer { s in
            Gemm.sgemm(transA: true, m: dim, n: dim, k: count, a: rows, lda: dim, b: rows, ldb: dim,
                       c: s.baseAddress!, ldc: dim)
        }
        let newSamples = samples + count
        let keep = Double(samples) / Double(newSamples), add = 2 / Double(newSamples)
        matrix.withUnsafeMutableBufferPointer { h in
            scratch.withUnsafeBufferPointer { s in
                for i in 0..<(dim * dim) { h[i] = h[i] * keep + add * Double(s[i]) }
            }
        }
        samples = newSamples
    }

    /// Accumulates the rows of `x`, viewed as (count / dim, dim).
    package func add(_ x: Tensor) {
        precondition(x.shape.last == dim, "activations of width \(x.shape.last ?? 0) for a Hessian of width \(dim)")
        add(rows: x.ptr, count: x.count / dim)
    }

    /// H as an fp32 tensor (dim, dim).
    package var tensor: Tensor {
        let t = Tensor(shape: [dim, dim])
        for i in 0..<(dim * dim) { t.ptr[i] = Float(matrix[i]) }
        return t
    }

    /// Forgets everything (reuse the buffers for the next layer of the same width).
    package func reset() {
        samples = 0
        for i in matrix.indices { matrix[i] = 0 }
    }
}
