import Formats
import CKernels
import Foundation
import Tensors

/// Settings of one GPTQ run (defaults as the paper's reference code).
package struct GPTQOptions: Equatable, Sendable {
    /// Columns per lazy-update block (errors inside a block propagate column by column; the
    /// block's accumulated error reaches the remaining columns in one GEMM).
    package var blockSize: Int
    /// λ = dampPercent · mean(diag H) is added to the diagonal before inverting.
    package var dampPercent: Double
    /// If the damped Hessian is still not positive definite, λ is multiplied by 10 up to this
    /// many times before giving up.
    package var maxDampRaises: Int
    /// Quantize columns in order of descending diag(H) ("act-order", "desc_act").
    package var actOrder: Bool
    /// Each group's grid computed once from the ORIGINAL weights before any update (groups =
    /// consecutive original columns, so gIdx stays col / groupSize even with act-order).
    /// false (default): grids from the current, error-updated weights at each group start in
    /// processing order; with act-order the groups are then runs of consecutive PERMUTED
    /// columns and gIdx records them.
    package var staticGroups: Bool
    /// MSE search for clipped grids (nil: plain min/max).
    package var clipSearch: ClipSearch?

    package init(blockSize: Int = 128, dampPercent: Double = 0.01, maxDampRaises: Int = 3,
                actOrder: Bool = false, staticGroups: Bool = false, clipSearch: ClipSearch? = nil) {
        precondition(blockSize > 0 && dampPercent >= 0 && maxDampRaises >= 0, "invalid GPTQ options")
        self.blockSize = blockSize
        self.dampPercent = dampPercent
        self.maxDampRaises = maxDampRaises
        self.actOrder = actOrder
        self.staticGroups = staticGroups
        self.clipSearch = clipSearch
    }
}

/// What one layer's quantization cost.
package struct GPTQStats: Equatable, Sendable {
    /// GPTQ's own loss: Σ (w - q)² / Hinv_jj² / 2 over all weights.
    package var loss: Double
    /// ‖(W - Q) X‖_F / ‖W X‖_F as sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)) with the Hessian as given
    /// (undamped) and the original weights.
    package var relativeOutputError: Double
    /// The λ finally added to the diagonal (after any automatic raises).
    package var damp: Double
    /// Input columns with H_ii = 0 (their weights were quantized as 0).
    package var deadColumns: Int
}

package struct GPTQResult: Sendable {
    package var matrix: QuantizedMatrix
    package var stats: GPTQStats
}

package struct GPTQError: UserFacingError, Equatable {
    package let message: String
    package var description: String { message }
}

/// GPTQ (Frantar et al. 2022): quantizes a linear layer's weight column by column, each column's
/// rounding error compensated on the not-yet-quantized columns through the inverse Hessian of
/// the layer's inputs.
///
/// Group convention (act-order, `staticGroups == false`): the `g_idx` convention. Columns are
/// processed in permuted order and group k = processing positions k·G ..< (k+1)·G, its grid taken
/// from the current weights when processing reaches position k·G; `gIdx[perm[j]] = j / G`, and
/// dequantization uses `scales[gIdx[col]]` (the last group is short when G does not divide cols).
/// Without act-order this is the ordinary sequential grouping (gIdx = col / G).
/// Codes are returned in the ORIGINAL column order.
package enum GPTQ {
    package static func quantize(weight: Tensor, hessian: Hessian, scheme: QuantScheme,
                                options: GPTQOptions = GPTQOptions(), layerName: String) throws -> GPTQResult {
        precondition(weight.rank == 2, "GPTQ quantizes a matrix, got shape \(weight.shape)")
        let rows = weight.shape[0], cols = weight.shape[1]
        guard let bits = scheme.weightBits else {
            throw GPTQError(message: "GPTQ: scheme \(scheme) of \(layerName) has no weight bits")
        }
        guard hessian.dim == cols else {
            throw GPTQError(message: "GPTQ: Hessian of \(layerName) is \(hessian.dim)x\(hessian.dim), the weight has \(cols) input columns")
        }
        let groupSize = scheme.groupSize
        let width = min(groupSize ?? cols, max(cols, 1))
        let groups = QuantizedMatrix.groupCount(cols: cols, groupSize: groupSize)
        let symmetric = scheme.symmetric
        let shrinks = options.clipSearch?.shrinks ?? [1]
        let norm = options.clipSearch?.norm ?? 2.4

        // Dead inputs: H_ii = 1, W[:, i] = 0.
        var h = hessian.matrix
        let w0 = weight.copy()
        var dead = 0
        for i in 0..<cols where h[i * cols + i] == 0 {
            h[i * cols + i] = 1
            for r in 0..<rows { w0.ptr[r * cols + i] = 0 }
            dead += 1
        }

        // Static grids (per channel, or `staticGroups`): from the original weights, by original group.
        let isStatic = groupSize == nil || options.staticGroups
        var staticGrids: [QuantGrid] = []
        if isStatic {
            staticGrids = [QuantGrid](repeating: QuantGrid(scale: 1, zero: 0, maxCode: 1), count: groups * rows)
            for g in 0..<groups {
                let lo = g * width, n = min(width, cols - lo)
                for r in 0..<rows {
                    staticGrids[g * rows + r] = RTN.bestGrid(w0.ptr + r * cols + lo, count: n, bits: bits,
                                                             symmetric: symmetric, shrinks: shrinks, norm: norm)
                }
            }
        }

        // Processing order: descending diag(H), ties by index (a stable sort).
        var perm = Array(0..<cols)
        if options.actOrder {
            perm.sort { a, b in
                let da = h[a * cols + a], db = h[b * cols + b]
                return da != db ? da > db : a < b
            }
        }
        let w: Tensor, hp: [Double]
        if options.actOrder {
            w = Tensor(shape: [rows, cols])
            var p = [Double](repeating: 0, count: cols * cols)
            for r in 0..<rows { for j in 0..<cols { w.ptr[r * cols + j] = w0.ptr[r * cols + perm[j]] } }
            for i in 0..<cols { for j in 0..<cols { p[i * cols + j] = h[perm[i] * cols + perm[j]] } }
            hp = p
        } else {
            w = w0
            hp = h
        }

        let (hinv, damp) = try inverseCholeskyUpper(hp, n: cols, dampPercent: options.dampPercent,
                                                    maxRaises: options.maxDampRaises, layerName: layerName)

        // Column-by-column quantization, lazily batched in blocks.
        var codesP = [UInt8](repeating: 0, count: rows * cols)   // processing order
        var scales = [Float](repeating: 0, count: groups * rows)
        var zeros = [Float](repeating: 0, count: groups * rows)
        var current = [QuantGrid](repeating: QuantGrid(scale: 1, zero: 0, maxCode: (1 << bits) - 1), count: rows)
        var rowLoss = [Double](repeating: 0, count: rows)
        let block = options.blockSize
        let w1 = UnsafeMutablePointer<Float>.allocate(capacity: rows * block)
        let err1 = UnsafeMutablePointer<Float>.allocate(capacity: rows * block)
        defer { w1.deallocate(); err1.deallocate() }

        hinv.withUnsafeBufferPointer { hinvBuf in
        codesP.withUnsafeMutableBufferPointer { codesBuf in
        scales.withUnsafeMutableBufferPointer { scalesBuf in
        zeros.withUnsafeMutableBufferPointer { zerosBuf in
        current.withUnsafeMutableBufferPointer { currentBuf in
        rowLoss.withUnsafeMutableBufferPointer { lossBuf in
        staticGrids.withUnsafeBufferPointer { staticBuf in
        perm.withUnsafeBufferPointer { permBuf in
            let hv = hinvBuf.baseAddress!, codes = codesBuf.baseAddress!
            let sc = scalesBuf.baseAddress!, zr = zerosBuf.baseAddress!, cur = currentBuf.baseAddress!
            let loss = lossBuf.baseAddress!, wp = w.ptr
            var i1 = 0
            while i1 < cols {
                let i2 = min(i1 + block, cols), count = i2 - i1
                for r in 0..<rows { (w1 + r * count).update(from: wp + r * cols + i1, count: count) }
                Threads.parallelFor(rows) { range in
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: width)
                    defer { scratch.deallocate() }
                    for r in range {
                        let row = w1 + r * count, err = err1 + r * count
                        var rl = 0.0
                        for i in 0..<count {
                            let j = i1 + i
                            var grid: QuantGrid
                            if isStatic {
                                let g = groupSize == nil ? 0 : permBuf[j] / width
                                grid = staticBuf[g * rows + r]
                            } else if j % width == 0 {
                                // The group's current values: in-block columns from the block copy.
                                let n = min(width, cols - j)
                                for k in 0..<n {
                                    let p = j + k
                                    scratch[k] = p < i2 ? row[p - i1] : wp[r * cols + p]
                                }
                                grid = RTN.bestGrid(scratch, count: n, bits: bits, symmetric: symmetric,
                                                    shrinks: shrinks, norm: norm)
                                cur[r] = grid
                                sc[(j / width) * rows + r] = grid.scale
                                zr[(j / width) * rows + r] = grid.zero
                            } else {
                                grid = cur[r]
                            }
                            let x = row[i]
                            let q = grid.code(x)
                            let dq = grid.dequantize(q)
                            codes[r * cols + j] = UInt8(truncatingIfNeeded: q)
                            let d = hv[j * cols + j]
                            let e = (x - dq) / d
                            rl += Double(e) * Double(e) / 2
                            err[i] = e
                            let hrow = hv + j * cols + i1
                            for k in (i + 1)..<count { row[k] -= e * hrow[k] }
                        }
                        loss[r] += rl
                    }
                }
                // W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
                if i2 < cols {
                    Gemm.sgemm(m: rows, n: cols - i2, k: count, alpha: -1, a: err1, lda: count,
                               b: hv + i1 * cols + i2, ldb: cols, beta: 1, c: wp + i2, ldc: cols)
                }
                i1 = i2
            }
        }}}}}}}}

        if isStatic {
            for i in 0..<(groups * rows) { scales[i] = staticGrids[i].scale; zeros[i] = staticGrids[i].zero }
        }
        // Back to the original column order.
        var codes = [UInt8](repeating: 0, count: rows * cols)
        var gIdx = [Int32](repeating: 0, count: cols)
        for j in 0..<cols {
            let c = perm[j]
            gIdx[c] = groupSize == nil ? 0 : Int32(isStatic ? c / width : j / width)
            for r in 0..<rows { codes[r * cols + c] = codesP[r * cols + j] }
        }
        let matrix = QuantizedMatrix(rows: rows, cols: cols, bits: bits, groupSize: groupSize, symmetric: symmetric,
                                     codes: codes, scales: scales, zeros: zeros, gIdx: gIdx)
        let error = relativeOutputError(weight: weight, quantized: matrix.dequantized(), hessian: hessian)
        return GPTQResult(matrix: matrix, stats: GPTQStats(loss: rowLoss.reduce(0, +), relativeOutputError: error,
                                                           damp: damp, deadColumns: dead))
    }

    /// sqrt(tr((W - Q) H (W - Q)ᵀ) / tr(W H Wᵀ)) = ‖(W - Q) X‖_F / ‖W X‖_F for H ∝ XᵀX.
    package static func relativeOutputError(weight: Tensor, quantized: Tensor, hessian: Hessian) -> Double {
        let rows = weight.shape[0], cols = weight.shape[1]
        precondition(quantized.shape == weight.shape && hessian.dim == cols, "shapes differ")
        let h = hessian.tensor
        let delta = Tensor(shape: [rows, cols])
        for i in 0..<weight.count { delta.ptr[i] = weight.ptr[i] - quantized.ptr[i] }
        func quadratic(_ a: Tensor) -> Double {
            let ah = Tensor(shape: [rows, cols])
            Gemm.sgemm(m: rows, n: cols, k: cols, a: a.ptr, lda: cols, b: h.ptr, ldb: cols, c: ah.ptr, ldc: cols)
            var s = 0.0
            for i in 0..<a.count { s += Double(a.ptr[i]) * Double(ah.ptr[i]) }
            return s
        }
        let den = quadratic(weight)
        return den > 0 ? (max(quadratic(delta), 0) / den).squareRoot() : 0
    }

    /// The upper Cholesky factor U of (H + λI)⁻¹ = UᵀU (row-major, fp32; computed in Double):
    /// Cholesky of H + λI, its inverse from the factor, Cholesky of the inverse. λ starts at
    /// dampPercent · mean(diag H) and is raised ×10 (at most `maxRaises` times) while any step
    /// fails; then the error names the layer.
    package static func inverseCholeskyUpper(_ h: [Double], n: Int, dampPercent: Double, maxRaises: Int,
                                            layerName: String) throws -> (upper: [Float], damp: Double) {
        var meanDiag = 0.0
        for i in 0..<n { meanDiag += h[i * n + i] }
        meanDiag /= Double(max(n, 1))
        var damp = dampPercent * meanDiag
        // A Gram matrix has a non-negative diagonal; a negative mean cannot be damped meaningfully.
        let hopeless = !(meanDiag > 0) || !meanDiag.isFinite
        if damp == 0 && !hopeless { damp = 1e-8 * meanDiag }
        var attempt = 0
        while !hopeless {
            var a = h
            for i in 0..<n { a[i * n + i] += damp }
            // H is symmetric, so the row-major array is also its column-major form. LAPACK's
            // column-major lower factor L (H = L Lᵀ) reads row-major as the upper U = Lᵀ.
            if factorInverseFactor(&a, n: n) {
                var upper = [Float](repeating: 0, count: n * n)
                for i in 0..<n { for j in i..<n { upper[i * n + j] = Float(a[i * n + j]) } }
                if upper.allSatisfy({ $0.isFinite }) && (0..<n).allSatisfy({ upper[$0 * n + $0] > 0 }) {
                    return (upper, damp)
                }
            }
            if attempt >= maxRaises { break }
            attempt += 1
            damp *= 10
        }
        throw GPTQError(message: "GPTQ: Hessian of \(layerName) is not positive definite after dampening \(String(format: "%.4g", damp)); more calibration data or a higher --damp")
    }

    /// In place: a ← upper Cholesky factor (row-major) of a⁻¹. False when a is not positive definite.
    private static func factorInverseFactor(_ a: inout [Double], n: Int) -> Bool {
        var uplo = Int8(UInt8(ascii: "L")), nn = Int32(n), lda = Int32(max(n, 1)), info: Int32 = 0
        a.withUnsafeMutableBufferPointer { p in
            dpotrf_(&uplo, &nn, p.baseAddress!, &lda, &info)
            if info == 0 { dpotri_(&uplo, &nn, p.baseAddress!, &lda, &info) }
            if info == 0 { dpotrf_(&uplo, &nn, p.baseAddress!, &lda, &info) }
        }
        return info == 0
    }
}
