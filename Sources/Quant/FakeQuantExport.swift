import Formats
import Tensors

extension FakeQuantizer {
    /// The trained low-bit weights as integer matrices for the packed format, by weight name.
    ///
    /// Each group keeps its trained grid with the scale rounded to fp16 and the zero point to an
    /// integer, as the packed format stores them, and the codes are recomputed on that grid. The
    /// exported model therefore differs from the training-time fake-quant forward only by those
    /// two roundings (the zero is continuous during LSQ training; see the type's notes).
    package func exportQuantized() -> [String: QuantizedMatrix] {
        var out: [String: QuantizedMatrix] = [:]
        for name in weightNames {
            let grid = grid(of: name), scales = grid.scales, zeros = grid.zeros
            let weight = weight(named: name)
            let rows = weight.value.shape[0], cols = weight.value.shape[1]
            let groupIndex = grid.groupIndex ?? QuantizedMatrix.sequentialGroupIndex(cols: cols, groupSize: scheme.groupSize)
            let groups = QuantizedMatrix.groupCount(cols: cols, groupSize: scheme.groupSize)
            var grids: [QuantGrid] = []
            grids.reserveCapacity(groups * rows)
            for i in 0..<(groups * rows) {
                grids.append(QuantGrid(scale: scales[i], zero: min(max(zeros[i].rounded(), 0), Float(maxCode)),
                                       maxCode: maxCode).roundedToFP16())
            }
            var codes = [UInt8](repeating: 0, count: rows * cols)
            codes.withUnsafeMutableBufferPointer { c in
                let w = weight.value.ptr
                Threads.parallelFor(rows) { range in
                    for r in range {
                        for col in 0..<cols {
                            c[r * cols + col] = UInt8(grids[Int(groupIndex[col]) * rows + r].code(w[r * cols + col]))
                        }
                    }
                }
            }
            out[name] = QuantizedMatrix(rows: rows, cols: cols, bits: bits, groupSize: scheme.groupSize,
                                        symmetric: scheme.symmetric, codes: codes,
                                        scales: grids.map(\.scale), zeros: grids.map(\.zero), gIdx: grid.groupIndex)
        }
        return out
    }
}
