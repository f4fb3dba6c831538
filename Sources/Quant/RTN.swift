import Formats
import Foundation
import Tensors

/// The MSE clip search of GPTQ's reference quantizer: for each group try the ranges
/// shrink * [min, max] with shrink = 1 - i/grid, i in 0..<Int(maxShrink * grid), and keep the one
/// minimising sum |x - Q(x)|^norm over the group (the first, i.e. least clipped, on ties).
/// shrink = 1 (no clipping) is always tried, so the search never raises the error.
package struct ClipSearch: Equatable, Sendable {
    package var grid: Int
    package var maxShrink: Float
    package var norm: Float

    package init(grid: Int = 100, maxShrink: Float = 0.8, norm: Float = 2.4) {
        precondition(grid > 0 && maxShrink > 0 && maxShrink <= 1 && norm > 0, "invalid clip search \(grid)/\(maxShrink)/\(norm)")
        self.grid = grid
        self.maxShrink = maxShrink
        self.norm = norm
    }

    /// GPTQ's defaults (grid 100, shrink down to 0.2, norm 2.4).
    package static let gptq = ClipSearch()

    /// The shrink factors tried, in order.
    package var shrinks: [Float] {
        (0..<max(1, Int(maxShrink * Float(grid)))).map { 1 - Float($0) / Float(grid) }
    }
}

/// Round-to-nearest quantization: each group's grid from its min/max (optionally clipped by the
/// MSE search), scale rounded to fp16, codes by rounding.
package enum RTN {
    /// `rowShrinks`: a fixed clip ratio per row (FlatQuant's learned weight clips) instead of the search.
    package static func quantize(_ w: Tensor, scheme: QuantScheme, clipSearch: ClipSearch? = nil, rowShrinks: [Float]? = nil) -> QuantizedMatrix {
        precondition(w.rank == 2, "RTN quantizes a matrix, got shape \(w.shape)")
        precondition(rowShrinks == nil || (rowShrinks!.count == w.shape[0] && clipSearch == nil), "RTN: \(rowShrinks!.count) row clips for \(w.shape[0]) rows, or with a clip search")
        guard let bits = scheme.weightBits else { preconditionFailure("scheme \(scheme) has no weight bits") }
        let rows = w.shape[0], cols = w.shape[1]
        let groupSize = scheme.groupSize
        let groups = QuantizedMatrix.groupCount(cols: cols, groupSize: groupSize)
        let width = groupSize ?? cols
        var codes = [UInt8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: groups * rows)
        var zeros = [Float](repeating: 0, count: groups * rows)
        let shrinks = clipSearch?.shrinks ?? [1]
        let norm = clipSearch?.norm ?? 2
        let symmetric = scheme.symmetric

        codes.withUnsafeMutableBufferPointer { codes in
        scales.withUnsafeMutableBufferPointer { scales in
        zeros.withUnsafeMutableBufferPointer { zeros in
            let c = codes.baseAddress!, s = scales.baseAddress!, z = zeros.baseAddress!
            Threads.parallelFor(rows) { range in
                for r in range {
                    let shrinks = rowShrinks.map { [$0[r]] } ?? shrinks
                    for g in 0..<groups {
                        let lo = g * width, n = min(width, cols - lo)
                        let x = UnsafePointer(w.ptr + r * cols + lo)
                        let grid = bestGrid(x, count: n, bits: bits, symmetric: symmetric,
                                            shrinks: shrinks, norm: norm)
                        s[g * rows + r] = grid.scale
                        z[g * rows + r] = grid.zero
                        let dst = c + r * cols + lo
                        for j in 0..<n { dst[j] = UInt8(truncatingIfNeeded: grid.code(x[j])) }
                    }
                }
            }
        }}}
        return QuantizedMatrix(rows: rows, cols: cols, bits: bits, groupSize: groupSize, symmetric: symmetric,
                               codes: codes, scales: scales, zeros: zeros)
    }

    /// The fp16-rounded grid of `count` values, the least-error one over `shrinks`.
    /// Errors are measured with the rounded grid, the one that will be stored.
    package static func bestGrid(_ x: UnsafePointer<Float>, count: Int, bits: Int, symmetric: Bool,
                                shrinks: [Float] = [1], norm: Float = 2.4) -> QuantGrid {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<count { lo = min(lo, x[i]); hi = max(hi, x[i]) }
        if count == 0 { lo = 0; hi = 0 }
        var best = QuantGrid(min: lo, max: hi, bits: bits, symmetric: symmetric, shrink: shrinks[0]).roundedToFP16()
        guard shrinks.count > 1 else { return best }
        var bestError = error(x, count: count, grid: best, norm: norm)
        for shrink in shrinks.dropFirst() {
            let grid = QuantGrid(min: lo, max: hi, bits: bits, symmetric: symmetric, shrink: shrink).roundedToFP16()
            let e = error(x, count: count, grid: grid, norm: norm, stopAbove: bestError)
            if e < bestError {
                bestError = e
                best = grid
            }
        }
        return best
    }

    /// sum |x - Q(x)|^norm; stops early once the sum exceeds `stopAbove` (it can only grow).
    @inline(__always)
    static func error(_ x: UnsafePointer<Float>, count: Int, grid: QuantGrid, norm: Float,
                      stopAbove: Float = .infinity) -> Float {
        var sum: Float = 0
        let maxq = Float(grid.maxCode), zero = grid.zero, scale = grid.scale
        var i = 0
        while i < count {
            let end = min(count, i + 16)
            for j in i..<end {
                // Same arithmetic as QuantGrid.code / dequantize (x / scale, not x * (1/scale)).
                let q = min(max((x[j] / scale).rounded(.toNearestOrEven) + zero, 0), maxq)
                let d = abs(x[j] - scale * (q - zero))
                sum += norm == 2 ? d * d : (d == 0 ? 0 : powf(d, norm))
            }
            if sum > stopAbove { return sum }
            i = end
        }
        return sum
    }
}
