import XCTest
import Tensors

final class GemmTests: XCTestCase {
    /// Every transpose combination against a naive triple loop in Double.
    func testSgemmAllTransposes() {
        var rng = SeededRNG(seed: 1)
        let m = 7, n = 5, k = 9
        for transA in [false, true] {
            for transB in [false, true] {
                let a = Tensor(shape: transA ? [k, m] : [m, k]), b = Tensor(shape: transB ? [n, k] : [k, n])
                rng.fillNormal(a)
                rng.fillNormal(b)
                let c = Gemm.matmul(a, b, transA: transA, transB: transB)
                for i in 0..<m {
                    for j in 0..<n {
                        var s = 0.0
                        for p in 0..<k {
                            s += Double(transA ? a[p, i] : a[i, p]) * Double(transB ? b[j, p] : b[p, j])
                        }
                        XCTAssertEqual(Double(c[i, j]), s, accuracy: 1e-5, "transA \(transA) transB \(transB)")
                    }
                }
            }
        }
    }

    func testBatchedSgemmMatchesLoop() {
        var rng = SeededRNG(seed: 2)
        let batch = 3, m = 4, n = 6, k = 5
        let a = Tensor(shape: [batch, m, k]), b = Tensor(shape: [batch, n, k])
        rng.fillNormal(a)
        rng.fillNormal(b)
        let c = Tensor(shape: [batch, m, n])
        Gemm.batchedSgemm(batch: batch, transB: true, m: m, n: n, k: k, a: a.ptr, lda: k, strideA: m * k,
                          b: b.ptr, ldb: k, strideB: n * k, c: c.ptr, ldc: n, strideC: m * n)
        for t in 0..<batch {
            for i in 0..<m {
                for j in 0..<n {
                    var s: Float = 0
                    for p in 0..<k { s += a[t, i, p] * b[t, j, p] }
                    XCTAssertEqual(c[t, i, j], s, accuracy: 1e-5)
                }
            }
        }
    }

    func testSgemvAccumulates() {
        let w = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let x: [Float] = [1, 0, -1]
        var y: [Float] = [10, 20]
        Gemm.sgemv(rows: 2, cols: 3, w: w.ptr, x: x, beta: 1, y: &y)
        XCTAssertEqual(y, [8, 18])
    }
}

final class HalfTests: XCTestCase {
    func testBF16RoundsToNearestEven() {
        // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
        XCTAssertEqual(Half.float(fromBF16: Half.bf16Bits(1 + 1.0 / 256)), 1)
        // Just above the tie rounds up.
        XCTAssertEqual(Half.float(fromBF16: Half.bf16Bits(1 + 1.0 / 256 + 1.0 / 65536)), 1 + 1.0 / 128)
        XCTAssertTrue(Half.float(fromBF16: Half.bf16Bits(.nan)).isNaN)
        XCTAssertEqual(Half.float(fromBF16: Half.bf16Bits(-.infinity)), -.infinity)
    }

    func testFP16KnownBits() {
        XCTAssertEqual(Half.fp16Bits(1), 0x3C00)
        XCTAssertEqual(Half.float(fromFP16: 0xC000), -2)
        XCTAssertEqual(Half.float(fromFP16: 0x0001), Float(5.9604645e-8))  // smallest subnormal
        let values: [Float] = [0.5, -3.25, 65504]
        var bits = [UInt16](repeating: 0, count: 3)
        var back = [Float](repeating: 0, count: 3)
        Half.convertToFP16(values, to: &bits, count: 3)
        Half.convertFP16(bits, to: &back, count: 3)
        XCTAssertEqual(back, values)
    }
}

final class RandomTests: XCTestCase {
    func testSeededAndDistributed() {
        var a = SeededRNG(seed: 42), b = SeededRNG(seed: 42), c = SeededRNG(seed: 43)
        XCTAssertEqual((0..<8).map { _ in a.next() }, (0..<8).map { _ in b.next() })
        XCTAssertNotEqual(a.next(), c.next())
        var r = SeededRNG(seed: 5)
        let xs = (0..<20_000).map { _ in Double(r.normal()) }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let variance = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
        let us = (0..<10_000).map { _ in r.uniform() }
        XCTAssertTrue(us.allSatisfy { $0 >= 0 && $0 < 1 })
    }
}

final class ThreadsTests: XCTestCase {
    /// Every index is visited exactly once, over many back-to-back jobs of varied sizes and
    /// after changing the thread count (the pool's workers must see every job).
    func testParallelForCoversEveryIndexOnce() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        for threads in [2, 3, 1, 2] {
            Threads.set(threads)
            for n in [0, 1, 2, 3, 7, 100, 1000] {
                let hits = UnsafeMutablePointer<Int32>.allocate(capacity: max(n, 1))
                hits.initialize(repeating: 0, count: max(n, 1))
                for _ in 0..<50 {
                    Threads.parallelFor(n) { range in for i in range { hits[i] += 1 } }
                }
                for i in 0..<n { XCTAssertEqual(hits[i], 50, "n \(n) threads \(threads) index \(i)") }
                hits.deallocate()
            }
        }
    }

    /// A task that starts a parallel loop of its own (attention's loop over heads calling a head
    /// transform's Kronecker product) gets it run on its own thread, covering every index once,
    /// instead of waiting for the pool it is running in. Run off the main thread, so that a
    /// deadlock stops the suite here within seconds, saying so, rather than hanging it (a deadlocked
    /// pool would hang every later test too).
    func testNestedParallelForRunsInsideTheTaskAndFinishes() {
        let saved = Threads.count
        Threads.set(2)
        let outer = 8, inner = 100
        let hits = UnsafeMutablePointer<Int32>.allocate(capacity: outer * inner)
        hits.initialize(repeating: 0, count: outer * inner)
        defer { hits.deallocate() }
        let done = DispatchSemaphore(value: 0)
        let hitsAddress = Int(bitPattern: hits)
        Thread.detachNewThread {
            let hits = UnsafeMutablePointer<Int32>(bitPattern: hitsAddress)!
            for _ in 0..<20 {
                Threads.parallelFor(outer) { range in
                    for o in range { Threads.parallelFor(inner) { r in for i in r { hits[o * inner + i] += 1 } } }
                }
            }
            done.signal()
        }
        guard done.wait(timeout: .now() + 30) == .success else {
            fatalError("ThreadsTests: a parallelFor inside a parallelFor's task did not finish in 30 s: the pool deadlocked")
        }
        Threads.set(saved)
        for i in 0..<(outer * inner) { XCTAssertEqual(hits[i], 20, "index \(i)") }
    }
}
