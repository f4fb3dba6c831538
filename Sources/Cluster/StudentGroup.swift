import CKernels
import Foundation
import Model
import Tensors
import Train

/// Data-parallel students over MPI: gradients are summed over the student communicator in
/// fused buckets of about `bucketBytes`. Buckets follow backward's order (last layer first);
/// a bucket's sum starts (MPI_Iallreduce) as soon as backward has finished its layers, so the
/// transfer overlaps with the backward of the layers below it.
package final class StudentGroup: DataParallelGroup {
    package let comm: Communicator
    package let bucketBytes: Int
    /// Seconds spent waiting for gradient sums after backward finished, summed over steps.
    package private(set) var reduceWaitSeconds: Double = 0
    package private(set) var bytesReduced = 0

    private struct Bucket {
        var parameters: [Parameter]
        /// The layer whose completion makes the bucket ready (nil: ready after backward).
        var readyAfterLayer: Int?
        let buffer: Tensor
        var request: Request?
    }
    private var buckets: [Bucket] = []

    package init(comm: Communicator, bucketBytes: Int = 16 << 20) {
        self.comm = comm
        self.bucketBytes = bucketBytes
    }

    package var index: Int { comm.rank }
    package var count: Int { comm.size }
    package var writesCheckpoints: Bool { comm.rank == 0 }

    /// Groups trainable parameters into buckets: whole layers, last first, until a bucket holds
    /// `bucketBytes`; everything outside the layers (embedding, final norm, head) last, because
    /// a tied embedding's gradient is completed only by the very end of backward.
    private func plan(_ parameters: [Parameter], layers: Int) -> [Bucket] {
        let trainable = parameters.filter { !$0.frozen }
        var byLayer = [[Parameter]](repeating: [], count: layers)
        var rest: [Parameter] = []
        for p in trainable {
            if let l = (0..<layers).first(where: { p.name.hasPrefix(TrainableDecoder.layerPrefix($0)) }) {
                byLayer[l].append(p)
            } else {
                rest.append(p)
            }
        }
        var plan: [Bucket] = []
        var current: [Parameter] = [], currentBytes = 0
        func close(after layer: Int?) {
            guard !current.isEmpty else { return }
            let size = current.reduce(0) { $0 + $1.grad.count }
            plan.append(Bucket(parameters: current, readyAfterLayer: layer, buffer: Tensor(shape: [size]), request: nil))
            current = []
            currentBytes = 0
        }
        for l in stride(from: layers - 1, through: 0, by: -1) {
            current += byLayer[l]
            currentBytes += byLayer[l].reduce(0) { $0 + 4 * $1.grad.count }
            if currentBytes >= bucketBytes || l == 0 { close(after: l) }
        }
        current = rest
        close(after: nil)
        return plan
    }

    package func beginReduction(_ parameters: [Parameter], model: TrainableDecoder) throws {
        if buckets.isEmpty { buckets = plan(parameters, layers: model.config.numHiddenLayers) }
        var failure: Error?
        model.layerGradientsReady = { [unowned self] layer in
            guard failure == nil else { return }
            do {
                for i in buckets.indices where buckets[i].readyAfterLayer == layer { try start(i) }
                // Let MPI move the buckets already in flight.
                for i in buckets.indices { _ = try buckets[i].request?.test() }
            } catch { failure = error }
        }
        pendingFailure = { failure }
        hooked = model
    }
    private var pendingFailure: () -> Error? = { nil }
    private weak var hooked: TrainableDecoder?

    private func start(_ i: Int) throws {
        var offset = 0
        let buffer = buckets[i].buffer
        for p in buckets[i].parameters {
            (buffer.ptr + offset).update(from: p.grad.ptr, count: p.grad.count)
            offset += p.grad.count
        }
        buckets[i].request = try comm.allReduceSumNonBlocking(UnsafeMutableBufferPointer(start: buffer.ptr, count: buffer.count))
        bytesReduced += 4 * buffer.count
    }

    package func finishReduction(_ parameters: [Parameter]) throws {
        hooked?.layerGradientsReady = nil   // earlier micro-batches of a step must not start sums
        if let failure = pendingFailure() { throw failure }
        for i in buckets.indices where buckets[i].request == nil { try start(i) }
        let start = MPI.time
        for i in buckets.indices {
            try buckets[i].request?.wait()
            buckets[i].request = nil
            var offset = 0
            for p in buckets[i].parameters {
                p.grad.ptr.update(from: buckets[i].buffer.ptr + offset, count: p.grad.count)
                offset += p.grad.count
            }
        }
        reduceWaitSeconds += MPI.time - start
    }

    package func sum(_ values: [Double]) throws -> [Double] { try comm.allReduceSum(values) }

    /// Compares a hash of every weight across the students; a mismatch stops the run naming
    /// the ranks that differ from student 0.
    package func checkIdentical(_ parameters: [Parameter], step: Int) throws {
        // The frames' CRC-32C (hardware, several GB/s) over every weight's bytes.
        var crc: UInt32 = 0
        for p in parameters { crc = rqat_crc32c(crc, p.value.ptr, 4 * p.value.count) }
        let all = try comm.allGather(withUnsafeBytes(of: crc.littleEndian) { Array($0) })
        let differing = all.indices.filter { all[$0] != all[0] }
        if !differing.isEmpty {
            throw ClusterError("after step \(step) the weights of student(s) \(differing.map(String.init).joined(separator: ", ")) differ from student 0's: the data-parallel ranks went out of sync (a rank with different inputs or a faulty machine); stopping. Resume from the last checkpoint.")
        }
    }
}
