import Formats
import Tensors

extension FakeQuantizer {
    /// The grids a model on disk carries for the weights `names`, to start QAT from:
    /// - a GPTQ-packed checkpoint (a PTQ result): its scales, zeros and act-order groups, which
    ///   must follow `scheme` (QAT from it continues that quantization, it does not re-grid it);
    /// - a training checkpoint of a QAT run: the quantizer state it saved (`<name>_scale`,
    ///   `_zero`, `_g_idx`), so a saved step's model is the one that run trained;
    /// - anything else (a full-precision model, or a run whose STE grid was min/max): no grids.
    package static func savedGrids(in source: any WeightSource, names: [String], scheme: QuantScheme) throws -> [String: InitialGrid] {
        var grids: [String: InitialGrid] = [:]
        if let packed = source as? GPTQWeights {
            guard packed.scheme.weightBits == scheme.weightBits, packed.scheme.groupSize == scheme.groupSize,
                  packed.scheme.symmetric == scheme.symmetric else {
                throw FakeQuantError("\(packed.path) is quantized as \(packed.scheme), but QAT asks for \(scheme): QAT from a PTQ init keeps its grid, so give --qat \(packed.scheme) (or start from a full-precision model)")
            }
            let quantized = Set(packed.quantizedNames)
            for name in names where quantized.contains(name) {
                grids[name] = InitialGrid(try packed.quantizedMatrix(name))
            }
            return grids
        }
        guard let maxCode = scheme.weightBits.map({ (1 << $0) - 1 }) else { return [:] }
        for name in names where source.has(name + "_scale") {
            let scales = try source.tensor(name + "_scale").array
            let zeros = source.has(name + "_zero")
                ? try source.tensor(name + "_zero").array
                : [Float](repeating: Float(maxCode + 1) / 2, count: scales.count)
            let index = source.has(name + groupIndexSuffix)
                ? try source.tensor(name + groupIndexSuffix).array.map { Int32($0) } : nil
            grids[name] = InitialGrid(scales: scales, zeros: zeros, groupIndex: index)
        }
        return grids
    }
}
