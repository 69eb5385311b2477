// One push-to-talk call from Debian's firefox-esr to the bridge's page, driven over
// WebDriver BiDi (puppeteer-core; no browser download). Firefox's fake devices give a
// 1 kHz tone as the microphone and a generated picture as the camera.
// Usage: node call.mjs PAGE_URL ARTIFACTS_DIR HOLD_SECONDS  -> one JSON line on stdout.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

const [url, artifacts, holdSeconds] = process.argv.slice(2);
const firefox = process.env.FIREFOX || "/usr/bin/firefox-esr";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "omni-rtc-firefox-"));
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: firefox,
  headless: true,
  userDataDir: profile,
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    "media.autoplay.default": 0,
    // plain host candidates (no mDNS names) on the namespace's veth pair
    "media.peerconnection.ice.obfuscate_host_addresses": false,
    "network.dns.disableIPv6": true,
  },
});
const result = { userAgent: await browser.userAgent() };
try {
  const page = await browser.newPage();
  result.console = [];
  page.on("console", (message) => result.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => result.console.push(`pageerror: ${error}`));
  const waitJs = (expression, seconds = 25) =>
    page.waitForFunction(`() => (${expression})`, { timeout: seconds * 1000, polling: 100 });
  await page.goto(`${url}/?processing=0`);
  await page.click("input[name=mode][value=manual]");
  await page.click("#call");
  await waitJs("document.querySelector('#connection').dataset.value === 'connected'", 20);
  await page.waitForSelector("#ptt:not([hidden]):not([disabled])");
  // What Firefox decoded and played, from its receiver statistics (Web Audio analysers
  // read zeros in headless Firefox without a sound server, so the page's meters cannot).
  const heard = () =>
    page.evaluate(async () => {
      let audio = { energy: 0, level: 0, packets: 0, bytes: 0 };
      (await window.omni.pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          audio = { energy: s.totalAudioEnergy, level: s.audioLevel, packets: s.packetsReceived, bytes: s.bytesReceived };
        }
      });
      return audio;
    });
  await sleep(1000);
  result.heardBefore = await heard(); // nothing said yet: only silence to hear
  const box = await (await page.$("#ptt")).boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await sleep(Number(holdSeconds) * 1000);
  await page.mouse.up();
  await waitJs("document.querySelector('#turns li.assistant[data-final]') !== null");
  await waitJs("window.omni.events.some(([, m]) => m.type === 'state' && m.value === 'speaking')");
  // the reply plays for 1.5 s: energy adds up; the level is the loudest of the samples
  // (one sample can fall in a gap)
  let loudest = 0;
  for (let i = 0; i < 15; i += 1) {
    await sleep(100);
    result.heardDuring = await heard();
    loudest = Math.max(loudest, result.heardDuring.level);
  }
  result.heardDuring.level = loudest;
  result.userText = await page.$eval("#turns li.user", (el) => el.innerText);
  result.assistantText = await page.$eval("#turns li.assistant", (el) => el.innerText);
  result.mode = await page.$eval("#mode", (el) => el.innerText);
  result.errorShown = await page.$eval("#error", (el) => !el.hidden);
  await page.screenshot({ path: path.join(artifacts, "firefox-push-to-talk.png") });
  await page.click("#hangup");
  await waitJs("document.querySelector('#connection').dataset.value === 'idle'", 5);
  result.endedIdle = true;
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  try {
    const [page] = (await browser.pages()).slice(-1);
    if (page) {
      result.events = await page.evaluate(() => JSON.stringify(window.omni && window.omni.events));
      result.page = await page.evaluate(() => document.body.innerText);
      await page.screenshot({ path: path.join(artifacts, "firefox-failure.png") });
    }
  } catch (diagnosticError) {
    result.diagnosticError = String(diagnosticError);
  }
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + "\n");
