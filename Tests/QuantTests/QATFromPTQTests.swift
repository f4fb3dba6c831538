import Foundation
import Formats
import Model
import Quant
import Tensors
import TestSupport
import Train
import XCTest

/// QAT from a PTQ init keeps the init's grid: its scales, zeros and act-order groups (g_idx), so
/// step 0 is the PTQ model bit for bit, and checkpoints carry the grid.
final class QATFromPTQTests: XCTestCase {
    /// Each column's group at random (sizes 16, 16, 8 for 40 columns), and the same matrix with
    /// its columns sorted by group (the order the kernels use), as (permuted index, column order).
    static func randomGroups(cols: Int, groupSize: Int, seed: UInt64) -> (index: [Int32], order: [Int]) {
        var rng = SeededRNG(seed: seed)
        var columns = Array(0..<cols)
        for i in stride(from: cols - 1, to: 0, by: -1) { columns.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        var index = [Int32](repeating: 0, count: cols)
        for (position, c) in columns.enumerated() { index[c] = Int32(position / groupSize) }
        let order = (0..<cols).sorted { (index[$0], $0) < (index[$1], $1) }
        return (index, order)
    }

    static func permuteColumns(_ x: [Float], rows: Int, order: [Int]) -> [Float] {
        let cols = order.count
        var out = x
        for r in 0..<rows { for (j, c) in order.enumerated() { out[r * cols + j] = x[r * cols + c] } }
        return out
    }

    /// Act-order groups give what contiguous groups give on the matrix with its columns sorted
    /// by group: the forward and, for STE and LSQ, dL/dW, dL/ds, dL/dz, bit for bit.
    func testPermutedGroupsEqualContiguousGroupsOnPermutedColumns() throws {
        let rows = 5, cols = 40, groupSize = 16, groups = 3
        let (index, order) = Self.randomGroups(cols: cols, groupSize: groupSize, seed: 11)
        XCTAssertNotEqual(index, QuantizedMatrix.sequentialGroupIndex(cols: cols, groupSize: groupSize))
        let w = FakeQuantTests.randomMatrix("p.weight", rows: rows, cols: cols, seed: 3)
        let wSorted = Parameter(name: "c.weight", value: Tensor(shape: [rows, cols], values: Self.permuteColumns(w.value.array, rows: rows, order: order)))
        var rng = SeededRNG(seed: 4)
        // Narrow scales so some codes clamp, and zeros off-centre.
        let scales = (0..<(groups * rows)).map { _ in 0.2 + 0.2 * Float(rng.next() % 100) / 100 }
        let zeros = (0..<(groups * rows)).map { _ in Float(3 + rng.next() % 10) }
        let d = Tensor(shape: [rows, cols])
        rng.fillNormal(d, std: 1)
        let dSorted = Self.permuteColumns(d.array, rows: rows, order: order)

        for mode in [FakeQuantizer.Mode.ste, .lsq] {
            let scheme = QuantScheme(weightBits: 4, groupSize: groupSize)
            let permuted = try FakeQuantizer(scheme: scheme, mode: mode, weights: [w],
                                             initialGrids: ["p.weight": .init(scales: scales, zeros: zeros, groupIndex: index)])
            let contiguous = try FakeQuantizer(scheme: scheme, mode: mode, weights: [wSorted],
                                               initialGrids: ["c.weight": .init(scales: scales, zeros: zeros)])
            let a = Tensor(shape: [rows, cols]), b = Tensor(shape: [rows, cols])
            permuted.forwardWeight(of: w, into: a.ptr)
            contiguous.forwardWeight(of: wSorted, into: b.ptr)
            XCTAssertEqual(Self.permuteColumns(a.array, rows: rows, order: order), b.array, "\(mode) forward")
            XCTAssertNotEqual(a.array, w.value.array)

            for p in [w, wSorted] + permuted.parameters + contiguous.parameters { p.zeroGrad() }
            permuted.backward(of: w, dQuantized: d.ptr)
            dSorted.withUnsafeBufferPointer { contiguous.backward(of: wSorted, dQuantized: $0.baseAddress!) }
            let gw = Self.permuteColumns(w.grad.array, rows: rows, order: order)
            XCTAssertEqual(gw, wSorted.grad.array, "\(mode) dL/dW")
            XCTAssertTrue(gw.contains(0) && gw.contains { $0 != 0 }, "some codes clamp, some do not")
            let own = permuted.parameters.filter { !$0.name.hasSuffix(FakeQuantizer.groupIndexSuffix) }
            XCTAssertEqual(own.map { $0.grad.array }, contiguous.parameters.map { $0.grad.array }, "\(mode) grid gradients")
            XCTAssertEqual(permuted.parameters.map(\.name).last, "p.weight_g_idx")
        }
    }

    func gptqCheckpoint(scheme: QuantScheme, in dir: URL) throws -> PTQResult {
        let checkpoint = try Checkpoint.open(TestPaths.fixture("tiny-qwen3").path)
        let decoder = Decoder(weights: try DecoderWeights(config: checkpoint.config, source: checkpoint.weights))
        var rng = SeededRNG(seed: 5)
        let calibration = (0..<8).map { _ in (0..<48).map { _ in Int(rng.next() % 256) } }
        var options = PTQOptions(scheme: scheme, method: .gptq, clipSearch: ClipSearch())
        options.gptq.actOrder = true
        let result = try PTQ.quantize(decoder: decoder, calibration: calibration, options: options)
        try QuantizedCheckpoint.save(directory: dir, config: decoder.config,
                                     fullPrecision: PTQ.fullPrecisionTensors(decoder.weights),
                                     quantized: result.quantized, scheme: scheme, method: "gptq")
        return result
    }

    /// The must-show of the fix: on a GPTQ init with act-order and clip search (as the SmolLM2
    /// recipe's), the QAT model at step 0 IS the init, and stays it through refresh(); its export
    /// gives back the init's codes, scales, zeros and g_idx. A min/max re-grid (the old
    /// behaviour) would move weights, which the last check shows.
    func testQATStartsFromTheGPTQInitExactly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-qat-init-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let scheme = try QuantScheme.parse("w3g32")
        let result = try gptqCheckpoint(scheme: scheme, in: dir)
        XCTAssertTrue(result.quantized.values.contains { $0.hasPermutedGroups }, "act-order gives permuted groups")

        let opened = try Checkpoint.open(dir.path)
        let student = try TrainableDecoder(config: opened.config, source: opened.weights)
        let names = student.linearWeights.map(\.name)
        let grids = try FakeQuantizer.savedGrids(in: opened.weights, names: names, scheme: scheme)
        XCTAssertEqual(Set(grids.keys), Set(names))
        let quantizer = try FakeQuantizer(decoder: student, scheme: scheme, mode: .ste, initialGrids: grids)
        XCTAssertTrue(quantizer.parameters.allSatisfy(\.frozen))
        for refreshed in [false, true] {
            if refreshed { quantizer.refresh() }
            for p in student.linearWeights {
                let out = Tensor(shape: p.value.shape)
                quantizer.forwardWeight(of: p, into: out.ptr)
                let initWeights = try XCTUnwrap(result.quantized[p.name]).dequantized()
                XCTAssertTrue(out.buffer.elementsEqual(initWeights.buffer), "\(p.name) at step 0 (refreshed: \(refreshed)) is not the GPTQ init")
            }
        }
        XCTAssertEqual(quantizer.exportQuantized(), result.quantized)

        var moved = 0
        let regrid = try FakeQuantizer(decoder: student, scheme: scheme, mode: .ste)
        for p in student.linearWeights {
            let out = Tensor(shape: p.value.shape)
            regrid.forwardWeight(of: p, into: out.ptr)
            moved += zip(out.array, p.value.array).filter { $0 != $1 }.count
        }
        XCTAssertGreaterThan(moved, 0, "a min/max re-grid moves GPTQ weights")

        XCTAssertThrowsError(try FakeQuantizer.savedGrids(in: opened.weights, names: names, scheme: try QuantScheme.parse("w4g32"))) {
            XCTAssertTrue("\($0)".contains(dir.path) && "\($0)".contains("--qat"), "\($0)")
        }
    }

    /// A fixed grid trains the weights only; checkpoints hold it, a resumed run is bit-identical
    /// to an uninterrupted one, and a saved step's grid is the init's.
    func testFixedGridRunResumesExactlyAndCheckpointsHoldTheGrid() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-qat-fixed-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let scheme = QuantScheme(weightBits: 4, groupSize: 16)
        func grids(_ model: TrainableDecoder) throws -> [String: FakeQuantizer.InitialGrid] {
            let minMax = try FakeQuantizer(decoder: model, scheme: scheme, mode: .ste)
            var out: [String: FakeQuantizer.InitialGrid] = [:]
            for (i, name) in minMax.weightNames.enumerated() {
                var g = minMax.grid(of: name)
                g.scales = g.scales.map { $0 * 0.8 }   // clipped, as a PTQ search would
                let cols = model.parameter(name)!.value.shape[1]
                g.groupIndex = Self.randomGroups(cols: cols, groupSize: 16, seed: UInt64(i)).index
                out[name] = g
            }
            return out
        }
        func run(_ name: String, until: Int? = nil) throws -> (Trainer, FakeQuantizer, [Double]) {
            let model = FakeQuantTests.tinyModel(seed: 7)
            let quantizer = try FakeQuantizer(decoder: model, scheme: scheme, mode: .ste, initialGrids: try grids(model))
            var rng = SeededRNG(seed: 9)
            let rows = (0..<8).map { _ in (0..<12).map { _ in Int(rng.next() % 64) } }
            var options = TrainOptions()
            options.steps = 6
            options.seqLen = 12
            options.batchTokens = 4 * 12
            options.lr = 1e-2
            options.saveEvery = 3
            let trainer = try Trainer(model: model, batches: { seed, position in
                try SFTBatcher(dataset: SFTDataset(path: "random", examples: rows.enumerated().map { SFTExample(tokens: $1, promptLength: 2, line: $0 + 1) }),
                               seqLen: 12, batchTokens: 4 * 12, packing: false, padId: 0, seed: seed, position: position)
            }, options: options, runDir: dir.appendingPathComponent(name), quantizer: quantizer)
            var losses: [Double] = []
            try trainer.run(untilStep: until) { losses.append($0.loss) }
            return (trainer, quantizer, losses)
        }
        let (straight, quantizer, losses) = try run("a")
        let initial = try grids(FakeQuantTests.tinyModel(seed: 7))
        for name in quantizer.weightNames {
            XCTAssertEqual(quantizer.grid(of: name).scales, initial[name]!.scales, "\(name): the grid stays fixed")
        }
        XCTAssertLessThan(losses.last!, losses.first!)
        _ = try run("b", until: 3)
        let (resumed, _, _) = try run("b")
        for (a, b) in zip(straight.parameters, resumed.parameters) {
            XCTAssertTrue(a.value.buffer.elementsEqual(b.value.buffer), "\(a.name) differs after resume")
        }
        let saved = try XCTUnwrap(TrainCheckpoint.latestCheckpoint(in: dir.appendingPathComponent("a")))
        let opened = try Checkpoint.open(saved.path)
        let reloaded = try FakeQuantizer.savedGrids(in: opened.weights, names: quantizer.weightNames, scheme: scheme)
        for name in quantizer.weightNames {
            XCTAssertEqual(reloaded[name]?.scales, initial[name]!.scales)
            XCTAssertEqual(reloaded[name]?.zeros, initial[name]!.zeros)
            XCTAssertEqual(reloaded[name]?.groupIndex, initial[name]!.groupIndex)
        }
    }
}
