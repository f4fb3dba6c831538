import Foundation
import Tensors

/// A weight matrix W (rows = output features, cols = input features) in low-bit form, laid out
/// as GPTQ lays it out, so it packs to a GPTQ checkpoint without reshuffling:
///
///     W[r, c] ≈ scales[g, r] * (codes[r, c] - zeros[g, r]),   g = gIdx[c]
///
/// Groups run along the input dimension: group g covers columns g*groupSize ..< (g+1)*groupSize
/// (the last one shorter when groupSize does not divide cols: 576 at G128 gives 128,128,128,128,64).
/// `gIdx` maps every input column to its group; act-order quantization may permute it.
/// Scales are fp16-representable (rounded at creation, see `QuantGrid.roundedToFP16`) and zeros
/// are integers, so a packed checkpoint (fp16 scales, integer zeros) dequantizes bit-identically.
package struct QuantizedMatrix: Equatable, Sendable {
    package let rows: Int
    package let cols: Int
    package let bits: Int
    /// Input columns per group; nil = one group per output channel (a group of `cols`).
    package let groupSize: Int?
    package let symmetric: Bool
    /// rows * cols integer codes in 0...2^bits-1, row-major.
    package var codes: [UInt8]
    /// (groups, rows): the grid of output channel r in group g is at [g * rows + r].
    package var scales: [Float]
    package var zeros: [Float]
    /// (cols): the group of each input column.
    package var gIdx: [Int32]

    /// Number of groups along the input dimension: ceil(cols / groupSize), or 1 per channel.
    package static func groupCount(cols: Int, groupSize: Int?) -> Int {
        guard let g = groupSize else { return 1 }
        return (cols + g - 1) / g
    }

    /// The default (no act-order) group of each column: col / groupSize, or all 0 per channel.
    package static func sequentialGroupIndex(cols: Int, groupSize: Int?) -> [Int32] {
        guard let g = groupSize else { return [Int32](repeating: 0, count: cols) }
        return (0..<cols).map { Int32($0 / g) }
    }

    package var groupCount: Int { Self.groupCount(cols: cols, groupSize: groupSize) }
    package var maxCode: Int { (1 << bits) - 1 }

    /// True when gIdx is not the sequential col / groupSize (act-order / desc_act).
    package var hasPermutedGroups: Bool { gIdx != Self.sequentialGroupIndex(cols: cols, groupSize: groupSize) }

    /// Checks every size (preconditions: a malformed matrix is a programming error; files are
    /// checked with one-line errors when they are read). `gIdx` nil = sequential.
    package init(rows: Int, cols: Int, bits: Int, groupSize: Int?, symmetric: Bool,
                codes: [UInt8], scales: [Float], zeros: [Float], gIdx: [Int32]? = nil) {
        precondition(rows >= 0 && cols >= 0, "negative size \(rows)x\(cols)")
        precondition(QuantScheme.supportedWeightBits.contains(bits), "unsupported bits \(bits)")
        precondition(groupSize.map { $0 > 0 } ?? true, "group size must be positive")
        let groups = Self.groupCount(cols: cols, groupSize: groupSize)
        precondition(codes.count == rows * cols, "\(codes.count) codes for \(rows)x\(cols)")
        precondition(scales.count == groups * rows && zeros.count == groups * rows,
                     "scales/zeros need \(groups)x\(rows) values, got \(scales.count)/\(zeros.count)")
        let gIdx = gIdx ?? Self.sequentialGroupIndex(cols: cols, groupSize: groupSize)
        precondition(gIdx.count == cols && gIdx.allSatisfy { $0 >= 0 && Int($0) < groups },
                     "g_idx must list a group in 0..<\(groups) for each of \(cols) columns")
        self.rows = rows
        self.cols = cols
        self.bits = bits
        self.groupSize = groupSize
        self.symmetric = symmetric
        self.codes = codes
        self.scales = scales
        self.zeros = zeros
        self.gIdx = gIdx
    }

    /// The scheme this matrix follows (weights only).
    package var scheme: QuantScheme { QuantScheme(weightBits: bits, groupSize: groupSize, symmetric: symmetric) }

    /// The grid of output channel `row` in group `group`.
    package func grid(row: Int, group: Int) -> QuantGrid {
        QuantGrid(scale: scales[group * rows + row], zero: zeros[group * rows + row], maxCode: maxCode)
    }

    /// W as fp32 (rows, cols).
    package func dequantized() -> Tensor {
        let t = Tensor(shape: [rows, cols])
        fakeQuantized(into: t.ptr)
        return t
    }

    /// Writes the dequantized matrix (rows * cols, row-major) to `out`:
    /// out[r, c] = scales[g, r] * (Float(codes[r, c]) - zeros[g, r]), exactly as `QuantGrid.dequantize`.
    package func fakeQuantized(into out: UnsafeMutablePointer<Float>) {
        let rows = rows, cols = cols
        codes.withUnsafeBufferPointer { codes in
        scales.withUnsafeBufferPointer { scales in
        zeros.withUnsafeBufferPointer { zeros in
        gIdx.withUnsafeBufferPointer { gIdx in
            let c = codes.baseAddress!, s = scales.baseAddress!, z = zeros.baseAddress!, gi = gIdx.baseAddress!
            Threads.parallelFor(rows) { range in
                for r in range {
                    let src = c + r * cols, dst = out + r * cols
                    for j in 0..<cols {
                        let g = Int(gi[j]) * rows + r
                        dst[j] = s[g] * (Float(src[j]) - z[g])
                    }
                }
            }
        }}}}
    }
}

extension QuantGrid {
    /// This grid with its scale rounded to the nearest fp16 value (kept positive and finite), as
    /// a GPTQ checkpoint stores it. Quantizers call this BEFORE computing codes, so the codes are
    /// the nearest ones for the scale actually stored. The zero is already an integer.
    package func roundedToFP16() -> QuantGrid {
        var s = Float(Float16(scale))
        if !(s > 0) { s = Float(Float16.leastNonzeroMagnitude) }
        if !s.isFinite { s = Float(Float16.greatestFiniteMagnitude) }
        return QuantGrid(scale: s, zero: zero, maxCode: maxCode)
    }
}
