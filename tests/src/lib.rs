//! End-to-end tests of Crier live in `tests/`: they start a real MQTT broker
//! (rumqttd in the test process, or Mosquitto) and the real service binaries.
