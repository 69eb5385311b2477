// Test harness only: publishes the fake camera and microphone with the npm package
// whip-whep (WHIPClient, served next to this file as ./whip.js), the way its README does.
import { WHIPClient } from "./whip.js";

const params = new URLSearchParams(location.search);
const direction = params.get("direction") || "sendonly";
const endpoint = new URL("/whip" + (params.get("query") || ""), location.href).href;
const state = (window.whipTest = { published: false, error: null, connection: "new" });

async function publish() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    video: { width: 640, height: 480, frameRate: 5 },
  });
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  for (const track of stream.getTracks()) {
    pc.addTransceiver(track, { direction: track.kind === "audio" ? direction : "sendonly" });
  }
  // listeners, not on* properties: WHIPClient.publish() sets pc.onconnectionstatechange
  pc.addEventListener("track", (event) => {
    document.querySelector("#reply").srcObject = new MediaStream([event.track]);
  });
  pc.addEventListener("connectionstatechange", () => {
    state.connection = pc.connectionState;
    document.querySelector("#connection").value = pc.connectionState;
  });
  const whip = new WHIPClient();
  state.pc = pc;
  state.whip = whip;
  await whip.publish(pc, endpoint);
  state.published = true;
}

publish().catch((error) => {
  state.error = String(error);
});
